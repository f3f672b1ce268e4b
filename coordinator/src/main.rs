//! `coordinator`: trains SN-LeNet-5 across worker processes (or in this process with
//! `--workers 0`) and reports the figures of SPEC.md.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
mod bench;

use bench::{PaperArgs, ScalingArgs, TestTimeArgs, run_paper, run_scaling, run_test_time};
use siamese_common::cluster::{ClusterArgs, train_on_cluster};
use siamese_common::config::TrainConfig;
use siamese_common::data::obtain_dataset;
use siamese_common::results::{EpochRecord, RunResults};
use siamese_common::train::{LocalEngine, Trainer, TrainingData};

/// Data-parallel trainer for the siamese LeNet-5 of "Advancements in Image Recognition: A
/// Siamese Network Approach" on MNIST, Fashion-MNIST and CIFAR-10.
///
/// By default it starts --workers worker processes on this machine and trains across them over
/// gRPC; with --no-spawn it waits for remote workers (`worker --coordinator http://HOST:PORT`).
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainConfig,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks that print tables and write JSON, CSV and PNG figures.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Pairs/s, speedup and scaling efficiency of the real cluster at several worker counts,
    /// with the step-time split (SPEC.md's strong and weak scaling).
    Scaling(ScalingArgs),
    /// The paper's test-time table side by side: SN-LeNet-5 scoring the 10,000 test pairs and a
    /// plain LeNet-5 classifying the 10,000 test images, same device and threads, with accuracies.
    TestTime(TestTimeArgs),
    /// The paper's tables at a chosen epoch budget: accuracy per dataset, test time, learning
    /// rate and batch size, with the paper's figures beside ours; training curves and test-pair
    /// grids as PNG, all figures as JSON.
    Paper(PaperArgs),
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn bench(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Scaling(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench scaling");
            async_runtime()?.block_on(async {
                tokio::select! {
                    r = run_scaling(args) => r.map(|_| ()).map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; workers stopped")),
                }
            })
        }
        Bench::TestTime(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench test-time");
            run_test_time(args).map(|_| ()).map_err(anyhow::Error::from)
        }
        Bench::Paper(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench paper");
            run_paper(args).map(|_| ()).map_err(anyhow::Error::from)
        }
    }
}

fn main() -> std::process::ExitCode {
    siamese_common::logging::init();
    let cli = Cli::parse();
    if let Some(Command::Bench(b)) = cli.command {
        // The scaling bench computes in its worker processes; test-time and paper compute here.
        let threads = match &b {
            Bench::Scaling(_) => 1,
            Bench::TestTime(args) => args.threads,
            Bench::Paper(args) => args.threads,
        };
        // SAFETY: nothing has started a thread yet.
        unsafe { siamese_common::threads::pin_compute_threads(threads) };
        return exit(bench(b));
    }
    // The coordinator of a cluster computes only Adam; in this process it trains.
    let threads = if cli.cluster.workers == 0 {
        cli.train.threads()
    } else {
        1
    };
    // SAFETY: nothing has started a thread yet.
    unsafe { siamese_common::threads::pin_compute_threads(threads) };
    exit(run(cli))
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_epoch(e: &EpochRecord) {
    println!(
        "epoch {:>4}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.2} s ({:.0} pairs/s)",
        e.epoch,
        e.train_loss,
        e.train_accuracy,
        e.val_loss,
        e.val_accuracy,
        e.seconds,
        e.pairs_per_s
    );
}

fn print_summary(r: &RunResults, out: &std::path::Path) {
    let t = &r.test;
    println!(
        "test: {} pairs  pair accuracy {:.4}  ROC AUC {:.4}  nearest-class-mean accuracy {:.4}  test time {:.3} s ({:.0} images/s)",
        t.pairs, t.pair_accuracy, t.roc_auc, t.ncm_accuracy, t.time_s, t.images_per_s
    );
    for w in &r.timing.per_worker {
        println!(
            "worker {} ({}): {} steps  compute {:.2} s  waiting {:.2} s  transfer {:.2} s  aggregation {:.2} s  ({:.1}% outside compute)",
            w.rank,
            w.peer,
            w.steps,
            w.compute_s,
            w.waiting_s,
            w.transfer_s,
            w.aggregation_s,
            100.0 * w.comm_share()
        );
    }
    println!("results written to {}", out.display());
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.train.resolved();
    let local = cli.cluster.workers == 0;
    tracing::info!(
        config = %serde_json::to_string(&cfg)?,
        cluster = %serde_json::to_string(&cli.cluster)?,
        "starting"
    );
    let dataset = Arc::new(obtain_dataset(cfg.dataset, cfg.data_dir.as_deref())?);
    let data = TrainingData::prepare(&cfg, dataset.clone())?;
    println!(
        "{}: {} training images, {} validation pairs, {} test pairs; {} epochs of batch {} on {}",
        dataset.kind.name(),
        data.train_pool.len(),
        data.val_pairs.len(),
        data.test_pairs.len(),
        cfg.epochs(),
        cfg.batch_size,
        if local {
            format!("this process ({} threads)", cfg.threads())
        } else {
            format!("{} workers", cli.cluster.workers)
        }
    );
    let out = cfg.out_path();
    let results = if local {
        // Training runs inside the pool so the kernels' parallel loops start on this thread.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads())
            .build()
            .context("starting the compute thread pool")?;
        let mut trainer = Trainer::new(cfg.clone(), data);
        let mut engine = LocalEngine::new(
            trainer.spec(),
            trainer.params(),
            dataset,
            &candle_core::Device::Cpu,
        )?;
        pool.install(|| trainer.run(&mut engine, &mut print_epoch))?
    } else {
        async_runtime()?.block_on(async {
            tokio::select! {
                r = train_on_cluster(cfg.clone(), cli.cluster.clone(), data, Box::new(print_epoch)) => r.map_err(anyhow::Error::from),
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; workers stopped")),
            }
        })?
    };
    print_summary(&results, &out);
    Ok(())
}
