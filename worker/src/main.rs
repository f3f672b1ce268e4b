//! `worker`: joins a coordinator and computes gradients and embeddings for its shards.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use siamese_common::cluster::protocol::auth::{TOKEN_ENV, TOKEN_FILE_ENV, resolve_token};
use siamese_common::cluster::{WorkerOptions, run_worker_blocking};
use siamese_common::threads::default_threads;

/// A siamese-cluster worker: holds a replica of SN-LeNet-5 on its device, loads the dataset the
/// coordinator names (same --data-dir resolution as the coordinator) and trains the shards it is
/// sent until the run ends.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// The coordinator's URL, e.g. http://10.0.0.5:50051.
    #[arg(long, env = "SIAMESE_COORDINATOR")]
    coordinator: String,
    /// The run's shared token; prefer SIAMESE_TOKEN or --token-file, which `ps` does not show.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// File holding the token (a mounted Secret, say), instead of --token.
    #[arg(long, env = TOKEN_FILE_ENV)]
    token_file: Option<PathBuf>,
    /// Device of the replica: cpu, or cuda:K in a build with the `cuda` feature.
    #[arg(long, env = "SIAMESE_DEVICE", default_value = "cpu")]
    device: String,
    /// Compute threads (default: all cores).
    #[arg(long, env = "SIAMESE_THREADS")]
    threads: Option<usize>,
    /// Folder holding the dataset's files (default: $SIAMESE_DATA_DIR/<dataset>, else ./data/<dataset>).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Rank to ask for, 0..workers (default: $JOB_COMPLETION_INDEX, the index of a Kubernetes
    /// Indexed Job's pod, else the lowest free one).
    #[arg(long, env = "SIAMESE_RANK")]
    rank: Option<u32>,
    /// Seconds to keep retrying the first connection.
    #[arg(long, env = "SIAMESE_CONNECT_TIMEOUT", default_value_t = 60)]
    connect_timeout: u64,
    /// Seconds to keep trying to get back into the run after losing the coordinator (it was
    /// killed, restarted from its checkpoint, or declared this worker lost); 0 exits at once.
    #[arg(long, env = "SIAMESE_RECONNECT_TIMEOUT", default_value_t = 300)]
    reconnect_timeout: u64,
    /// Seconds between HTTP/2 keepalive PINGs; a coordinator that misses two in a row is gone.
    #[arg(long, env = "SIAMESE_KEEPALIVE", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive: u64,
}

fn main() -> std::process::ExitCode {
    siamese_common::logging::init();
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| default_threads(1));
    // SAFETY: nothing has started a thread yet.
    unsafe { siamese_common::threads::pin_compute_threads(threads) };
    match run(cli, threads) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, threads: usize) -> anyhow::Result<()> {
    let opts = WorkerOptions {
        coordinator: cli.coordinator,
        token: resolve_token(cli.token.as_deref(), cli.token_file.as_deref())?,
        device: cli.device,
        threads,
        data_dir: cli.data_dir,
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        reconnect_timeout: Duration::from_secs(cli.reconnect_timeout),
        keepalive: Duration::from_secs(cli.keepalive),
        rank: match cli.rank {
            Some(rank) => Some(rank),
            None => job_completion_index()?,
        },
    };
    tracing::info!(coordinator = %opts.coordinator, device = %opts.device, threads, "worker starting");
    run_worker_blocking(opts)?;
    Ok(())
}

/// The index Kubernetes gives each pod of an Indexed Job, which that pod asks for as its rank
/// (so a replaced pod takes its predecessor's place); `None` outside such a Job.
fn job_completion_index() -> anyhow::Result<Option<u32>> {
    match std::env::var("JOB_COMPLETION_INDEX") {
        Ok(value) => value
            .parse()
            .map(Some)
            .with_context(|| format!("JOB_COMPLETION_INDEX={value:?} is not a rank")),
        Err(_) => Ok(None),
    }
}
