//! `coordinator bench paper`: the paper's tables in one command. Trains SN-LeNet-5 in this process
//! on each dataset at a chosen epoch budget, then the learning-rate and batch-size tables on MNIST,
//! prints markdown tables with the paper's figures beside ours, and writes the JSON, the training
//! curves and a grid of scored test pairs as PNG.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

mod report;
mod settings;

pub use report::PaperReport;
pub use settings::PaperArgs;

use report::{DatasetRun, GridPair, SensitivityRow, Skipped, budget, display_name, paper_tables};
use settings::QUICK_PAIRS;

use super::BenchError;
use super::error::io_error;
use super::files::{write_bytes, write_json, write_png};
use super::machine::machine;
use super::pair_grid::draw_pair_grid;
use super::paper_figures::{PAPER_BATCH_TABLE, PAPER_LR_TABLE, SENSITIVITY_DATASET, paper_dataset};
use super::plot::plot_training_curves;
use super::stats::Spread;
use siamese_common::config::TrainConfig;
use siamese_common::data::{Dataset, DatasetKind, files_present, obtain_dataset};
use siamese_common::results::{EpochRecord, RunResults};
use siamese_common::stop::StopFlag;
use siamese_common::train::eval::score_pairs;
use siamese_common::train::output_files::{OutputFile, check_output_files};
use siamese_common::train::{
    ImageSplit, LocalEngine, Noise, OnEpoch, RunControl, TrainError, Trainer, TrainingData,
};

/// Test pairs drawn in the grid figure: 4 rows of 4.
const GRID_PAIRS: usize = 16;
/// Runs everything, prints the tables and writes the JSON, markdown and PNG files.
pub fn run_paper(mut args: PaperArgs, stop: &StopFlag) -> Result<PaperReport, BenchError> {
    args.check()?;
    let start = Instant::now();
    // Names the flag when a file stands where the report folder goes, before any dataset loads.
    check_output_files(&[
        OutputFile::new("--out (the report folder)", args.out.join("paper.json")),
        OutputFile::new("--out (the report folder)", args.out.join("paper.md")),
    ])?;
    std::fs::create_dir_all(args.out.join("runs")).map_err(io_error(&args.out))?;
    // Every run trains inside this pool, as `coordinator --workers 0` does, so the kernels'
    // parallel loops use exactly --threads threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let (mut datasets, mut skipped, mut runs) = (Vec::new(), Vec::new(), 0);
    let mut mnist_data = None;
    for &kind in &args.datasets {
        let dataset = match load(&args, kind) {
            Ok(d) => Arc::new(d),
            Err(reason) => {
                eprintln!("skipping {}: {reason}", kind.name());
                skipped.push(Skipped {
                    what: kind.name().into(),
                    reason,
                });
                continue;
            }
        };
        let run = pool.install(|| train_dataset(&args, dataset.clone(), stop))?;
        runs += 1;
        if kind == SENSITIVITY_DATASET {
            mnist_data = Some((dataset, run.results.clone()));
        }
        datasets.push(run);
    }
    let (mut lr_table, mut batch_table) = (Vec::new(), Vec::new());
    match mnist_data {
        Some((dataset, base)) => {
            let (lrs, batches, trained) =
                pool.install(|| sensitivity(&args, dataset, &base, stop))?;
            runs += trained;
            (lr_table, batch_table) = (lrs, batches);
        }
        None => skipped.push(Skipped {
            what: "the learning-rate and batch-size tables".into(),
            reason:
                "the paper measured them on MNIST, which did not run here (add --dataset mnist)"
                    .into(),
        }),
    }
    if datasets.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, s.reason))
            .collect();
        return Err(BenchError::Config(format!(
            "no dataset could run; {}",
            why.join("; ")
        )));
    }
    let total_seconds = start.elapsed().as_secs_f64();
    let report = PaperReport {
        machine: machine(),
        budget: budget(&args, runs, total_seconds),
        args,
        datasets,
        skipped,
        lr_table,
        batch_table,
        total_seconds,
    };
    let tables = paper_tables(&report);
    println!("{tables}");
    write_files(&report, &tables)?;
    Ok(report)
}

/// Loads `kind` from its folder; the reason in words when it cannot run.
fn load(args: &PaperArgs, kind: DatasetKind) -> Result<Dataset, String> {
    let dir = args.data_dir(kind);
    // CIFAR-10 is 170 MB and this project prepares it from a JPEG copy: never fetch it here.
    if kind == DatasetKind::Cifar10 && !files_present(kind, &dir) {
        return Err(format!(
            "no CIFAR-10 binary files in {} (write them with `python3 ../shared/datasets/prepare-cifar10.py DIR` \
             and pass --cifar10-dir DIR)",
            dir.display()
        ));
    }
    obtain_dataset(kind, Some(&dir)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The configuration of one run: the paper's settings at this budget, with --lr and the recipe.
fn config(args: &PaperArgs, kind: DatasetKind, name: &str) -> Result<TrainConfig, BenchError> {
    let quick = args.quick.then_some(QUICK_PAIRS);
    let defaults = TrainConfig::defaults(kind)?;
    Ok(TrainConfig {
        lr: args.lr(),
        epochs: Some(args.epochs_for(kind)),
        seed: args.seed,
        threads: Some(args.threads),
        train_subset: args.train_subset,
        val_pairs: quick,
        test_pairs: quick,
        data_dir: Some(args.data_dir(kind)),
        out: Some(args.out.join("runs").join(format!("{name}.json"))),
        recipe: args.recipe.clone(),
        ..defaults
    })
}

/// One training run in the current pool; the trainer and engine stay for the pair grid.
fn train(
    cfg: TrainConfig,
    dataset: Arc<Dataset>,
    name: &str,
    stop: &StopFlag,
) -> Result<(RunResults, Trainer, LocalEngine), TrainError> {
    let data = TrainingData::prepare(&cfg, dataset.clone())?;
    eprintln!(
        "[{name}] {} training images, {} validation pairs, {} test pairs; {} epoch(s), batch {}, lr {:e}",
        data.train_pool.len(),
        data.val_pairs.len(),
        data.test_pairs.len(),
        cfg.epochs(),
        cfg.batch_size,
        cfg.lr
    );
    let micro = cfg.micro_batch as usize;
    let noise = Noise::of(&cfg);
    let mut trainer = Trainer::new(cfg, data);
    let mut engine = LocalEngine::new(
        trainer.spec(),
        trainer.params(),
        dataset,
        &Device::Cpu,
        micro,
    )?
    .with_noise(noise);
    let mut on_epoch = OnEpoch(|e: &EpochRecord| {
        eprintln!(
            "[{name}] epoch {}: train loss {:.4} acc {:.4}, val loss {:.4} acc {:.4}, {:.1} s",
            e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.seconds
        )
    });
    let control = RunControl {
        observer: &mut on_epoch,
        stop: stop.clone(),
    };
    let results = trainer.run(&mut engine, control)?;
    eprintln!(
        "[{name}] test pair accuracy {:.4}, {:.3} s",
        results.test.pair_accuracy, results.test.time_s
    );
    Ok((results, trainer, engine))
}

fn seconds_per_epoch(r: &RunResults) -> f64 {
    let s: Vec<f64> = r.epochs.iter().map(|e| e.seconds).collect();
    Spread::of(&s).median
}

/// Trains on one dataset at the paper's settings and draws its curves and pair grid.
fn train_dataset(
    args: &PaperArgs,
    dataset: Arc<Dataset>,
    stop: &StopFlag,
) -> Result<DatasetRun, BenchError> {
    let kind = dataset.kind;
    let cfg = config(args, kind, kind.name())?;
    let (results, trainer, mut engine) = train(cfg, dataset.clone(), kind.name(), stop)?;
    let data = trainer.data();
    let shown = &data.test_pairs[..GRID_PAIRS.min(data.test_pairs.len())];
    let views = args.recipe.test_augment;
    let scored = score_pairs(
        &mut engine,
        trainer.tested(),
        ImageSplit::Test,
        shown,
        views,
    )?;
    let test = &dataset.test;
    let grid = shown
        .iter()
        .zip(&scored.scores)
        .map(|(p, &s)| GridPair {
            a: p.a,
            b: p.b,
            labels: [test.label(p.a as usize), test.label(p.b as usize)],
            same: p.same,
            similarity: s,
        })
        .collect();
    let curves = args.out.join(format!("curves-{}.png", kind.name()));
    write_png(&curves, |tmp| {
        plot_training_curves(display_name(kind), &results.epochs, tmp)
    })?;
    let pairs_png = args.out.join(format!("pairs-{}.png", kind.name()));
    write_png(&pairs_png, |tmp| {
        draw_pair_grid(test, shown, &scored.scores, 4, tmp)
    })?;
    Ok(DatasetRun {
        dataset: kind,
        data_dir: args.data_dir(kind).display().to_string(),
        train_images: data.train_pool.len(),
        val_pairs: data.val_pairs.len(),
        seconds_per_epoch: seconds_per_epoch(&results),
        curves_png: curves.display().to_string(),
        pairs_png: pairs_png.display().to_string(),
        grid,
        paper: paper_dataset(kind),
        results,
    })
}

/// The learning-rate and batch-size tables on MNIST, and how many runs they trained: a row with
/// the dataset table's MNIST run's settings (batch 64 at its rate, and in the learning-rate
/// table its rate when it is one of the three) is that run.
fn sensitivity(
    args: &PaperArgs,
    dataset: Arc<Dataset>,
    base: &RunResults,
    stop: &StopFlag,
) -> Result<(Vec<SensitivityRow>, Vec<SensitivityRow>, usize), BenchError> {
    let kind = dataset.kind;
    let base_file = args.out.join("runs").join(format!("{}.json", kind.name()));
    let row = |r: &RunResults, lr: f64, batch_size: u32, file: &Path| {
        let last = r.epochs.last();
        SensitivityRow {
            lr,
            batch_size,
            epochs: r.epochs.len(),
            train_accuracy: last.map_or(0.0, |e| e.train_accuracy),
            val_accuracy: last.map_or(0.0, |e| e.val_accuracy),
            test_accuracy: r.test.pair_accuracy,
            seconds_per_epoch: seconds_per_epoch(r),
            paper_train_accuracy: 0.0,
            paper_seconds_per_epoch: None,
            results_file: file.display().to_string(),
        }
    };
    // The dataset table's MNIST run: its rate and batch.
    let base_cfg = config(args, kind, kind.name())?;
    let mut trained = 0;
    let mut lr_table = Vec::new();
    for (lr, paper) in PAPER_LR_TABLE {
        let r = if lr == base_cfg.lr {
            row(base, lr, base_cfg.batch_size, &base_file)
        } else {
            trained += 1;
            let name = format!("{}-lr-{lr:e}", kind.name());
            let cfg = TrainConfig {
                lr,
                ..config(args, kind, &name)?
            };
            let file = cfg.out_path();
            let (results, ..) = train(cfg, dataset.clone(), &name, stop)?;
            row(&results, lr, base_cfg.batch_size, &file)
        };
        lr_table.push(SensitivityRow {
            paper_train_accuracy: paper,
            ..r
        });
    }
    let mut batch_table = Vec::new();
    for (batch, paper, paper_s) in PAPER_BATCH_TABLE {
        let r = if batch == base_cfg.batch_size {
            row(base, base_cfg.lr, batch, &base_file)
        } else {
            trained += 1;
            let name = format!("{}-batch-{batch}", kind.name());
            let cfg = TrainConfig {
                batch_size: batch,
                ..config(args, kind, &name)?
            };
            let file = cfg.out_path();
            let (results, ..) = train(cfg, dataset.clone(), &name, stop)?;
            row(&results, base_cfg.lr, batch, &file)
        };
        batch_table.push(SensitivityRow {
            paper_train_accuracy: paper,
            paper_seconds_per_epoch: Some(paper_s),
            ..r
        });
    }
    Ok((lr_table, batch_table, trained))
}

/// Writes paper.json and paper.md under --out.
fn write_files(r: &PaperReport, tables: &str) -> Result<(), BenchError> {
    let json_path = r.args.out.join("paper.json");
    write_json(&json_path, r)?;
    let md_path = r.args.out.join("paper.md");
    write_bytes(&md_path, tables.as_bytes())?;
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    for d in &r.datasets {
        eprintln!("wrote {} and {}", d.curves_png, d.pairs_png);
    }
    Ok(())
}
