//! `coordinator bench test-time`: the paper's Table 4 side by side in one run. The time SN-LeNet-5
//! takes to score the 10,000 test pairs and the time a plain LeNet-5 classifier takes to classify
//! the 10,000 test images, on the same device and threads, with both models' test accuracy.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
mod report;
mod settings;

pub use report::{CLASSIFIER_MODEL, SN_MODEL, TestTimeReport, test_time_table};
pub use settings::TestTimeArgs;

use report::{row, write_report};

use super::BenchError;
use super::error::io_error;
use super::machine::machine;
use super::paper_figures::paper_figures;
use siamese_common::aggregation::OptimizerState;
use siamese_common::config::TrainConfig;
use siamese_common::data::{Dataset, TestAugment, obtain_dataset};
use siamese_common::train::classifier::{accuracy, classify};
use siamese_common::train::eval::{score_pairs, test_record};
use siamese_common::train::output_files::{OutputFile, check_output_files};
use siamese_common::train::{
    ClassifierConfig, ClassifierTrainer, Engine, ImageSplit, LocalEngine, TrainError, Trainer,
    TrainingData,
};

/// Trains (or loads) both models, times them, prints the table and writes the JSON.
pub fn run_test_time(mut args: TestTimeArgs) -> Result<TestTimeReport, BenchError> {
    args.out = Some(args.out_path());
    let mut files = vec![OutputFile::new("--out", args.out_path())];
    if let Some(scores) = &args.scores {
        files.push(OutputFile::new("--scores", scores.clone()));
    }
    check_output_files(&files)?;
    let dataset = Arc::new(obtain_dataset(args.dataset, args.data_dir.as_deref())?);
    // Both models train and run inside this pool, as `coordinator --workers 0` trains, so the
    // kernels' parallel loops use exactly --threads threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
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

fn measure(args: TestTimeArgs, dataset: Arc<Dataset>) -> Result<TestTimeReport, BenchError> {
    let cfg = TrainConfig {
        epochs: Some(args.epochs),
        seed: args.seed,
        threads: Some(args.threads),
        embedding: args.embedding,
        train_subset: args.train_subset,
        data_dir: args.data_dir.clone(),
        ..TrainConfig::defaults(args.dataset)?
    };
    let data = TrainingData::prepare(&cfg, dataset.clone())?;
    let (train_pool, val_pool) = (data.train_pool.clone(), data.val_pool.clone());
    let micro = cfg.micro_batch as usize;
    let mut trainer = Trainer::new(cfg, data);
    let spec = trainer.spec();
    let device = Device::Cpu;
    let mut engine = LocalEngine::new(spec, trainer.params(), dataset.clone(), &device, micro)?;
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
    // Only the weights matter for scoring; Adam's state is left fresh.
    let state = OptimizerState::new(weights, 0.0);
    engine.load_state(&state)?;

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
        .map_err(|_| BenchError::Config(format!("{} test images are too many", test.len())))?;
    let test_images: Vec<u32> = (0..n_test).collect();
    // Warm-up passes, which also give the accuracies (the timed passes compute the same).
    let (sn_test, scores) = test_record(
        &mut engine,
        &state,
        &data.test_pairs,
        test.labels(),
        (&data.train_pool, dataset.train.labels()),
        TestAugment::None,
    )?;
    if let Some(path) = &args.scores {
        crate::scores_file::write_scores(path, &data.test_pairs, &scores, test.labels())
            .map_err(io_error(path))?;
        eprintln!("test pair scores written to {}", path.display());
    }
    let predicted = classify(classifier.replica_mut(), test, &test_images)?;
    let class_accuracy = accuracy(&predicted, test, &test_images);

    let (mut sn_times, mut class_times, mut sn_images) = (Vec::new(), Vec::new(), 0);
    for repeat in 1..=args.repeats {
        let pairs = &data.test_pairs;
        let (scored, sn_s) = timed(|| {
            score_pairs(
                &mut engine,
                &state,
                ImageSplit::Test,
                pairs,
                TestAugment::None,
            )
        })?;
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
    use std::path::PathBuf;

    use super::report::row;
    use super::*;
    use clap::Parser;
    use siamese_common::data::DatasetKind;
    use siamese_common::results::TestRecord;

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
    fn zero_repeats_are_refused_by_the_flag() {
        let err = match Cli::try_parse_from(["x", "--repeats", "0"]) {
            Ok(_) => panic!("--repeats 0 was taken"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("'0' for '--repeats <REPEATS>'"), "{err}");
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
