//! `coordinator`: trains SN-LeNet-5 across worker processes (or in this process with
//! `--workers 0`) and reports the figures of docs/spec.md.

use anyhow::Context;
use clap::{Parser, Subcommand};
mod bench;
mod console;
mod curves;
mod infer;
mod log_writer;
mod output_args;
mod progress;
mod scores_file;
mod training;

use bench::{PaperArgs, ScalingArgs, TestTimeArgs, run_paper, run_scaling, run_test_time};
use console::Console;
use infer::{CompareArgs, EmbedArgs, SearchArgs, ServeArgs};
use log_writer::BarAwareStderr;
use output_args::OutputArgs;
use siamese_common::cluster::ClusterArgs;
use siamese_common::config::TrainConfig;
use siamese_common::error_report::error_report;
use siamese_common::logging::LogFormat;
use siamese_common::stop::StopFlag;
use siamese_common::threads::default_threads;
use siamese_common::train::TrainError;
use training::RunOutputArgs;

/// Data-parallel trainer for the siamese LeNet-5 of "Advancements in Image Recognition: A
/// Siamese Network Approach" on MNIST, Fashion-MNIST and CIFAR-10.
///
/// By default it starts --workers worker processes on this machine and trains across them over
/// gRPC; with --no-spawn it waits for remote workers (`worker --coordinator http://HOST:PORT`).
/// Workers may be lost and join mid-run; the same seed gives the same weights, bit for bit, for
/// any number of workers on CPU.
///
/// Exit status: 0 when the run finished; 75 when SIGTERM or SIGINT stopped it after writing its
/// checkpoint (run again with --resume auto to continue); 1 on an error.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainConfig,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    outputs: RunOutputArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks that print tables and write JSON, CSV and PNG figures.
    #[command(subcommand)]
    Bench(Bench),
    /// Embeddings of images (PNG, JPEG, or a dataset file's images by index) from a trained
    /// checkpoint, as CSV or .npy.
    Embed(EmbedArgs),
    /// The similarity of two images, and whether the model calls them the same class (> 0.5).
    Compare(CompareArgs),
    /// The gallery images nearest to a query image.
    Search(SearchArgs),
    /// A gRPC inference service (Embed, Compare, Search) of a trained checkpoint, with
    /// grpc.health.v1, the run token and batching of concurrent requests.
    Serve(ServeArgs),
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Pairs/s, speedup and scaling efficiency of the real cluster at several worker counts,
    /// with the step-time split (strong and weak scaling as docs/spec.md defines them).
    Scaling(ScalingArgs),
    /// The paper's test-time table side by side: SN-LeNet-5 scoring the 10,000 test pairs and a
    /// plain LeNet-5 classifying the 10,000 test images, same device and threads, with accuracies.
    TestTime(TestTimeArgs),
    /// The paper's tables at a chosen epoch budget: accuracy per dataset, test time, learning
    /// rate and batch size, with the paper's figures beside ours; training curves and test-pair
    /// grids as PNG, all figures as JSON.
    Paper(PaperArgs),
}

/// Exit status of a run stopped by SIGTERM or SIGINT after writing its checkpoint
/// (EX_TEMPFAIL: "try again", which `--resume auto` does).
const EXIT_INTERRUPTED: u8 = 75;

fn bench(b: Bench, stop: StopFlag) -> anyhow::Result<()> {
    match b {
        Bench::Scaling(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench scaling");
            run_scaling(args, &stop)?;
        }
        Bench::TestTime(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench test-time");
            run_test_time(args)?;
        }
        Bench::Paper(args) => {
            tracing::info!(args = %serde_json::to_string(&args)?, "bench paper");
            run_paper(args, &stop)?;
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    siamese_common::heap::keep_freed_memory();
    let cli = Cli::parse();
    // The coordinator of a cluster computes only Adam; in this process it trains; the scaling
    // bench computes in its worker processes.
    let threads = match &cli.command {
        Some(Command::Bench(Bench::Scaling(_))) => 1,
        Some(Command::Bench(Bench::TestTime(args))) => args.threads,
        Some(Command::Bench(Bench::Paper(args))) => args.threads,
        Some(Command::Embed(EmbedArgs { model, .. }))
        | Some(Command::Compare(CompareArgs { model, .. }))
        | Some(Command::Search(SearchArgs { model, .. }))
        | Some(Command::Serve(ServeArgs { model, .. })) => {
            model.threads.unwrap_or_else(|| default_threads(1))
        }
        None if cli.cluster.workers == 0 => cli.train.threads_per_process(1),
        None => 1,
    };
    // SAFETY: nothing has started a thread yet.
    unsafe { siamese_common::threads::pin_compute_threads(threads) };
    let console = Console::new(&cli.output);
    siamese_common::logging::init_with(
        cli.output.log_format,
        cli.output.default_level(),
        BarAwareStderr::new(console.bars().clone()),
    );
    // Decided now, with logging up, so that a bad SIAMESE_KERNELS is reported before any work.
    let kernels = siamese_common::model::KernelPath::selected();
    tracing::debug!(kernels = kernels.name(), "CPU kernels");
    let result = StopFlag::on_signals()
        .context("installing the SIGINT and SIGTERM handlers")
        .and_then(|stop| match cli.command {
            Some(Command::Bench(b)) => bench(b, stop),
            Some(Command::Embed(args)) => infer::run_embed(args),
            Some(Command::Compare(args)) => infer::run_compare(args),
            Some(Command::Search(args)) => infer::run_search(args),
            Some(Command::Serve(args)) => infer::run_serve(args, threads, &stop),
            None => training::train(cli.train, &cli.cluster, &cli.outputs, &console, stop),
        });
    // With JSON logs the last words are a JSON line too, so that every line of a pod parses.
    let say = |what: &str, e: &anyhow::Error| {
        let report = error_report(e.as_ref());
        match cli.output.log_format {
            LogFormat::Json => tracing::error!(error = %report, "{what}"),
            LogFormat::Text => eprintln!("{what}: {report}"),
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref(), Some(TrainError::Interrupted)) => {
            say("stopped", &e);
            std::process::ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            say("error", &e);
            std::process::ExitCode::FAILURE
        }
    }
}
