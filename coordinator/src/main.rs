//! `coordinator`: trains SN-LeNet-5 (in this process for now) and reports SPEC.md's figures.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use siamese_common::config::TrainConfig;
use siamese_common::data::obtain_dataset;
use siamese_common::model::ModelSpec;
use siamese_common::train::{LocalEngine, Trainer, TrainingData};

/// Distributed trainer for the siamese LeNet-5 of "Advancements in Image Recognition: A Siamese
/// Network Approach" on MNIST, Fashion-MNIST and CIFAR-10.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    train: TrainConfig,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.train.resolved();
    let threads = cfg.threads();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("starting the compute thread pool")?;
    tracing::info!(config = %serde_json::to_string(&cfg)?, "starting");

    let dataset = Arc::new(obtain_dataset(cfg.dataset, cfg.data_dir.as_deref())?);
    let data = TrainingData::prepare(&cfg, dataset.clone())?;
    println!(
        "{}: {} training images, {} validation pairs, {} test pairs; {} epochs of batch {} on {} thread(s)",
        dataset.kind.name(),
        data.train_pool.len(),
        data.val_pairs.len(),
        data.test_pairs.len(),
        cfg.epochs(),
        cfg.batch_size,
        threads
    );
    let mut trainer = Trainer::new(cfg.clone(), data);
    let spec: ModelSpec = trainer.spec();
    let mut engine = LocalEngine::new(spec, trainer.params(), dataset, &candle_core::Device::Cpu)?;
    let results = trainer.run(&mut engine, &mut |e| {
        println!(
            "epoch {:>4}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.2} s ({:.0} pairs/s)",
            e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.seconds, e.pairs_per_s
        );
    })?;
    let t = &results.test;
    println!(
        "test: {} pairs  pair accuracy {:.4}  ROC AUC {:.4}  nearest-class-mean accuracy {:.4}  test time {:.3} s ({:.0} images/s)",
        t.pairs, t.pair_accuracy, t.roc_auc, t.ncm_accuracy, t.time_s, t.images_per_s
    );
    println!("results written to {}", cfg.out_path().display());
    Ok(())
}
