//! `worker`: joins a coordinator and computes gradients and embeddings for its shards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use siamese_common::cluster::protocol::auth::{TOKEN_ENV, TOKEN_FILE_ENV, resolve_token};
use siamese_common::cluster::protocol::tls::ClientTls;
use siamese_common::cluster::{WorkerOptions, coordinator_url, run_worker_blocking};
use siamese_common::config::within;
use siamese_common::error_report::error_report;
use siamese_common::logging::{LOG_FORMAT_ENV, LogFormat};
use siamese_common::telemetry::{METRICS_LISTEN_ENV, MetricsServer, WorkerMetrics};
use siamese_common::threads::default_threads;

/// A siamese-cluster worker: holds a replica of SN-LeNet-5 on its device, loads the dataset the
/// coordinator names (same --data-dir resolution as the coordinator) and trains the shards it is
/// sent until the run ends.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// The coordinator's URL, e.g. http://10.0.0.5:50051, or https://... for TLS.
    #[arg(long, env = "SIAMESE_COORDINATOR", value_parser = coordinator_url)]
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
    /// Compute threads, 1 to 1024 (default: all cores).
    #[arg(long, env = "SIAMESE_THREADS", value_parser = within(1usize, 1024))]
    threads: Option<usize>,
    /// Folder holding the dataset's files (default: $SIAMESE_DATA_DIR/<dataset>, else ./data/<dataset>).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TLS: the CA (PEM) the coordinator's certificate must chain to (default: the system's).
    #[arg(long, env = "SIAMESE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: this worker's client certificate (PEM).
    #[arg(long, env = "SIAMESE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "SIAMESE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// TLS: the name the coordinator's certificate must carry, when not the URL's host.
    #[arg(long, env = "SIAMESE_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// Rank to ask for, 0 to workers - 1 (default: $JOB_COMPLETION_INDEX, the index of a
    /// Kubernetes Indexed Job's pod, else the lowest free one).
    #[arg(long, env = "SIAMESE_RANK", value_parser = within(0u32, 1023))]
    rank: Option<u32>,
    /// Seconds (0 to 86400) to keep retrying the first connection.
    #[arg(long, env = "SIAMESE_CONNECT_TIMEOUT", default_value_t = 60, value_parser = within(0u64, 86_400))]
    connect_timeout: u64,
    /// Seconds (0 to 86400) to keep trying to get back into the run after losing the coordinator (it was
    /// killed, restarted from its checkpoint, or declared this worker lost); 0 exits at once.
    #[arg(long, env = "SIAMESE_RECONNECT_TIMEOUT", default_value_t = 300, value_parser = within(0u64, 86_400))]
    reconnect_timeout: u64,
    /// Seconds (1 to 3600) between HTTP/2 keepalive PINGs; a coordinator that misses two in a row is gone.
    #[arg(long, env = "SIAMESE_KEEPALIVE", default_value_t = 3, value_parser = within(1u64, 3600))]
    keepalive: u64,
    /// Serve Prometheus metrics (tasks, compute, idle and send seconds, sessions) at
    /// http://ADDR/metrics, e.g. 0.0.0.0:9101.
    #[arg(long, env = METRICS_LISTEN_ENV)]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as text or as one JSON object per line (what Kubernetes log pipelines read);
    /// RUST_LOG filters them.
    #[arg(long, value_enum, env = LOG_FORMAT_ENV, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> std::process::ExitCode {
    siamese_common::heap::keep_freed_memory();
    let cli = Cli::parse();
    siamese_common::logging::init(cli.log_format, "info");
    // Decided now, with logging up, so that a bad SIAMESE_KERNELS is reported before any work.
    let kernels = siamese_common::model::KernelPath::selected();
    tracing::debug!(kernels = kernels.name(), "CPU kernels");
    let threads = cli.threads.unwrap_or_else(|| default_threads(1));
    // SAFETY: nothing has started a thread yet.
    unsafe { siamese_common::threads::pin_compute_threads(threads) };
    match run(cli, threads) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_report(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The TLS settings the flags ask for; `None` when they name none (an https:// URL then trusts
/// the system's CAs).
fn tls_options(cli: &Cli) -> anyhow::Result<Option<ClientTls>> {
    let any = cli.tls_ca.is_some()
        || cli.tls_cert.is_some()
        || cli.tls_key.is_some()
        || cli.tls_domain.is_some();
    Ok(match any {
        true => Some(ClientTls::load(
            cli.tls_ca.as_deref(),
            cli.tls_cert.as_deref(),
            cli.tls_key.as_deref(),
            cli.tls_domain.as_deref(),
        )?),
        false => None,
    })
}

fn run(cli: Cli, threads: usize) -> anyhow::Result<()> {
    let tls = tls_options(&cli)?;
    let metrics = cli.metrics_listen.map(|_| WorkerMetrics::new());
    // Kept alive for the whole run: dropping it stops the endpoint.
    let _server = match (cli.metrics_listen, &metrics) {
        (Some(addr), Some(m)) => {
            let m = m.clone();
            Some(MetricsServer::start(addr, Arc::new(move || m.render()))?)
        }
        _ => None,
    };
    let opts = WorkerOptions {
        coordinator: cli.coordinator,
        token: resolve_token(cli.token.as_deref(), cli.token_file.as_deref())?,
        device: cli.device,
        threads,
        data_dir: cli.data_dir,
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        reconnect_timeout: Duration::from_secs(cli.reconnect_timeout),
        keepalive: Duration::from_secs(cli.keepalive),
        tls,
        rank: match cli.rank {
            Some(rank) => Some(rank),
            None => job_completion_index()?,
        },
        metrics,
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
