//! `coordinator bench test-time`: the paper's Table 4 side by side in one run. The time SN-LeNet-5
//! takes to score the 10,000 test pairs and the time a plain LeNet-5 classifier takes to classify
//! the 10,000 test images, on the same device and threads, with both models' test accuracy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::scaling::machine;
use super::stats::Spread;
use super::test_time_report::{row, test_time_table, write_report};
use crate::config::TrainConfig;
use crate::data::{Dataset, DatasetKind, obtain_dataset};
use crate::results::{EpochRecord, TestRecord};
use crate::train::classifier::{accuracy, classify};
use crate::train::eval::{score_pairs, test_record};
use crate::train::{
    ClassEpoch, ClassifierConfig, ClassifierTrainer, Engine, ImageSplit, LocalEngine, TrainError,
    Trainer, TrainingData,
};

/// Settings of `coordinator bench test-time`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestTimeArgs {
    /// Dataset of both models.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (same resolution as training).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// SN-LeNet-5 weights to time instead of training them here: the `.safetensors` file a
    /// training run writes beside its results.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Embedding width of the SN-LeNet-5 (must match --checkpoint).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub embedding: u32,
    /// Compute threads of this process, for training and timing both models.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Training epochs of each model (of the classifier only, with --checkpoint).
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Timed passes of each model after one warm-up pass, taken in alternation; the times are
    /// their medians.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of both models' initial weights and training order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on only the first N images of the training split (quick runs); the test set is
    /// always whole.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// JSON report; default results/test-time-<dataset>.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Name of the siamese model in the report.
pub const SN_MODEL: &str = "SN-LeNet-5";
/// Name of the classifier in the report.
pub const CLASSIFIER_MODEL: &str = "LeNet-5";

/// What the paper reports for one model on one dataset; `None` where it gives nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaperFigures {
    /// Seconds for the 10,000 test items (TensorFlow + CUDA on their desktop).
    pub time_s: Option<f64>,
    /// Test accuracy as a fraction.
    pub accuracy: Option<f64>,
}

/// The paper's figures (SPEC.md) for SN-LeNet-5 and for the plain LeNet-5, in that order.
pub fn paper_figures(kind: DatasetKind) -> [PaperFigures; 2] {
    let (sn_time, sn_acc, lenet_time, lenet_acc) = match kind {
        DatasetKind::Mnist => (4.04, 0.9911, Some(9.37), Some(0.9905)),
        DatasetKind::FashionMnist => (3.73, 0.9165, None, None),
        DatasetKind::Cifar10 => (4.35, 0.8164, None, None),
    };
    [
        PaperFigures {
            time_s: Some(sn_time),
            accuracy: Some(sn_acc),
        },
        PaperFigures {
            time_s: lenet_time,
            accuracy: lenet_acc,
        },
    ]
}

/// One model's row of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedRow {
    /// `SN-LeNet-5` or `LeNet-5`.
    pub model: String,
    /// What was timed.
    pub task: String,
    /// Test pairs scored, or test images classified.
    pub items: usize,
    /// Distinct images that went through the network.
    pub images: usize,
    /// Median seconds of a timed pass.
    pub time_s: f64,
    /// Spread of the timed passes.
    pub time_spread: Spread,
    /// Items per second at the median.
    pub items_per_s: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Pair accuracy (SN-LeNet-5) or classification accuracy (LeNet-5).
    pub test_accuracy: f64,
    /// The paper's figures for this model and dataset.
    pub paper: PaperFigures,
}

/// What `bench test-time` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestTimeReport {
    /// The machine, as /proc/cpuinfo names it, and its cores.
    pub machine: String,
    /// Where both models ran.
    pub device: String,
    /// The settings, with the output path filled in.
    pub args: TestTimeArgs,
    /// Where the SN-LeNet-5 weights came from.
    pub sn_weights: String,
    /// SN-LeNet-5 training epochs run here (none with --checkpoint).
    pub sn_epochs: Vec<EpochRecord>,
    /// Classifier training epochs.
    pub classifier_epochs: Vec<ClassEpoch>,
    /// SN-LeNet-5's full test figures (ROC AUC, nearest-class-mean accuracy), from its warm-up.
    pub sn_test: TestRecord,
    /// SN-LeNet-5's row, then the classifier's.
    pub rows: Vec<TimedRow>,
}

impl TestTimeArgs {
    /// Report path with the default filled in.
    pub fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("results/test-time-{}.json", self.dataset.name()))
        })
    }
}

/// Trains (or loads) both models, times them, prints the table and writes the JSON.
pub fn run_test_time(mut args: TestTimeArgs) -> Result<TestTimeReport, TrainError> {
    if args.threads == 0 || args.repeats == 0 || args.epochs == 0 {
        return Err(TrainError::Config(
            "--threads, --repeats and --epochs must be at least 1".into(),
        ));
    }
    args.out = Some(args.out_path());
    let dataset = Arc::new(obtain_dataset(args.dataset, args.data_dir.as_deref())?);
    // Both models train and run inside this pool, as `coordinator --workers 0` trains, so the
    // kernels' parallel loops use exactly --threads threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| TrainError::Engine(format!("starting the compute thread pool: {e}")))?;
    let report = pool.install(|| measure(args, dataset))?;
    println!("{}", test_time_table(&report));
    write_report(&report)?;
    Ok(report)
}

/// Seconds `f` takes.
fn timed<T>(f: impl FnOnce() -> Result<T, TrainError>) -> Result<(T, f64), TrainError> {
    let start = Instant::now();
    let out = f()?;
    Ok((out, start.elapsed().as_secs_f64()))
}

fn measure(args: TestTimeArgs, dataset: Arc<Dataset>) -> Result<TestTimeReport, TrainError> {
    let bad_env = |e: clap::Error| TrainError::Config(format!("an environment variable: {e}"));
    let cfg = TrainConfig {
        epochs: Some(args.epochs),
        seed: args.seed,
        threads: Some(args.threads),
        embedding: args.embedding,
        train_subset: args.train_subset,
        data_dir: args.data_dir.clone(),
        ..TrainConfig::defaults(args.dataset).map_err(bad_env)?
    };
    let data = TrainingData::prepare(&cfg, dataset.clone())?;
    let (train_pool, val_pool) = (data.train_pool.clone(), data.val_pool.clone());
    let mut trainer = Trainer::new(cfg, data);
    let spec = trainer.spec();
    let device = Device::Cpu;
    let mut engine = LocalEngine::new(spec, trainer.params(), dataset.clone(), &device)?;
    let mut sn_epochs = Vec::new();
    let (weights, sn_weights) = match &args.checkpoint {
        Some(path) => (spec.load(path)?, format!("loaded from {}", path.display())),
        None => {
            for epoch in 1..=args.epochs {
                let e = trainer.epoch(&mut engine, epoch)?;
                eprintln!(
                    "{SN_MODEL} epoch {epoch}: train loss {:.4} acc {:.4}, val pair acc {:.4}, {:.1} s",
                    e.train_loss, e.train_accuracy, e.val_accuracy, e.seconds
                );
                sn_epochs.push(e);
            }
            let how = format!("trained here for {} epoch(s)", args.epochs);
            (trainer.params().to_vec(), how)
        }
    };
    engine.set_weights(&weights)?;
    // The similarity unit (a, b) closes the flat layout, as in `Trainer`.
    let unit = (weights[weights.len() - 2], weights[weights.len() - 1]);

    let class_cfg = ClassifierConfig {
        epochs: args.epochs,
        seed: args.seed,
        ..ClassifierConfig::default()
    };
    let mut classifier =
        ClassifierTrainer::new(class_cfg, dataset.clone(), train_pool, val_pool, &device)?;
    let classifier_epochs = classifier.run(&mut |e| {
        eprintln!(
            "{CLASSIFIER_MODEL} epoch {}: train loss {:.4} acc {:.4}, val acc {:.4}, {:.1} s",
            e.epoch, e.train_loss, e.train_accuracy, e.val_accuracy, e.seconds
        )
    })?;

    let data = trainer.data();
    let test = &dataset.test;
    let n_test = u32::try_from(test.len())
        .map_err(|_| TrainError::Config(format!("{} test images are too many", test.len())))?;
    let test_images: Vec<u32> = (0..n_test).collect();
    // Warm-up passes, which also give the accuracies (the timed passes compute the same).
    let sn_test = test_record(
        &mut engine,
        &data.test_pairs,
        test.labels(),
        &data.train_pool,
        dataset.train.labels(),
        unit,
    )?;
    let predicted = classify(classifier.replica_mut(), test, &test_images)?;
    let class_accuracy = accuracy(&predicted, test, &test_images);

    let (mut sn_times, mut class_times, mut sn_images) = (Vec::new(), Vec::new(), 0);
    for repeat in 1..=args.repeats {
        let pairs = &data.test_pairs;
        let (scored, sn_s) = timed(|| score_pairs(&mut engine, ImageSplit::Test, pairs, unit))?;
        let replica = classifier.replica_mut();
        let (_, class_s) = timed(|| classify(replica, test, &test_images))?;
        eprintln!(
            "repeat {repeat}/{}: {SN_MODEL} {sn_s:.3} s, {CLASSIFIER_MODEL} {class_s:.3} s",
            args.repeats
        );
        sn_images = scored.images.len();
        sn_times.push(sn_s);
        class_times.push(class_s);
    }
    let [sn_paper, class_paper] = paper_figures(args.dataset);
    let rows = vec![
        row(
            SN_MODEL,
            "score the test pairs",
            data.test_pairs.len(),
            sn_images,
            &sn_times,
        )
        .with(sn_test.pair_accuracy, sn_paper),
        row(
            CLASSIFIER_MODEL,
            "classify the test images",
            test_images.len(),
            test_images.len(),
            &class_times,
        )
        .with(class_accuracy, class_paper),
    ];
    Ok(TestTimeReport {
        machine: machine(),
        device: engine.info().device,
        args,
        sn_weights,
        sn_epochs,
        classifier_epochs,
        sn_test,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TestTimeArgs,
    }

    fn parse(flags: &[&str]) -> TestTimeArgs {
        Cli::parse_from(std::iter::once("x").chain(flags.iter().copied())).args
    }

    #[test]
    fn defaults_and_the_report_path() {
        let a = parse(&[]);
        assert_eq!(
            (a.dataset, a.epochs, a.repeats, a.threads),
            (DatasetKind::Mnist, 2, 5, 1)
        );
        assert_eq!(a.out_path(), PathBuf::from("results/test-time-mnist.json"));
        let a = parse(&["--dataset", "cifar10", "--out", "x.json"]);
        assert_eq!(a.out_path(), PathBuf::from("x.json"));
        assert_eq!(
            parse(&["--dataset", "fashion-mnist"]).out_path(),
            PathBuf::from("results/test-time-fashion-mnist.json")
        );
    }

    #[test]
    fn zero_repeats_are_refused_before_any_data_is_read() {
        let a = parse(&["--repeats", "0", "--data-dir", "/nonexistent"]);
        let err = run_test_time(a).unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn paper_figures_are_spec_md_table() {
        let [sn, lenet] = paper_figures(DatasetKind::Mnist);
        assert_eq!((sn.time_s, sn.accuracy), (Some(4.04), Some(0.9911)));
        assert_eq!((lenet.time_s, lenet.accuracy), (Some(9.37), Some(0.9905)));
        let [sn, lenet] = paper_figures(DatasetKind::Cifar10);
        assert_eq!((sn.time_s, sn.accuracy), (Some(4.35), Some(0.8164)));
        assert_eq!(lenet, PaperFigures::default());
        assert_eq!(
            paper_figures(DatasetKind::FashionMnist)[0].accuracy,
            Some(0.9165)
        );
    }

    #[test]
    fn the_table_puts_the_paper_beside_ours_and_na_where_it_is_silent() {
        let [sn_paper, class_paper] = paper_figures(DatasetKind::FashionMnist);
        let report = TestTimeReport {
            machine: "test CPU, 2 cores".into(),
            device: "cpu".into(),
            args: parse(&["--dataset", "fashion-mnist"]),
            sn_weights: "trained here for 2 epoch(s)".into(),
            sn_epochs: Vec::new(),
            classifier_epochs: Vec::new(),
            sn_test: TestRecord {
                pairs: 10_000,
                pair_accuracy: 0.9,
                roc_auc: 0.95,
                ncm_accuracy: 0.85,
                time_s: 1.0,
                images_per_s: 10_000.0,
            },
            rows: vec![
                row(SN_MODEL, "score", 10_000, 10_000, &[2.0, 1.0, 3.0]).with(0.9, sn_paper),
                row(CLASSIFIER_MODEL, "classify", 10_000, 10_000, &[0.5]).with(0.8, class_paper),
            ],
        };
        let t = test_time_table(&report);
        let sn = t.lines().find(|l| l.starts_with("| SN-LeNet-5")).unwrap();
        assert_eq!(
            sn,
            "| SN-LeNet-5 | score | 10000 | 2.000 (1.000-3.000) | 5000 | 5000 | 90.00 | 3.73 | 91.65 |"
        );
        let lenet = t.lines().find(|l| l.starts_with("| LeNet-5")).unwrap();
        assert!(lenet.ends_with("| 80.00 | n/a | n/a |"), "{lenet}");
        assert!(t.contains("fashion-mnist") && t.contains("85.00%"), "{t}");
    }
}
