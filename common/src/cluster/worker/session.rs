//! A worker's sessions with the coordinator: connect, learn the run, load its data (once), join
//! (answering the coordinator's challenge with a hash over the data), set up NCCL if the run
//! uses it, then hand the stream to the task
//! loop until Stop. When the coordinator goes away (killed, restarted from its checkpoint, or it
//! declared this worker lost), the worker reconnects with backoff for up to its reconnect
//! window and joins again as a new session; the coordinator gives it the run's state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::device::parse_device;
use super::nccl_join::nccl_rendezvous;
use super::task_loop::{SessionEnd, TaskRunner};
use super::welcome::check_welcome;
use crate::aggregation::{Aggregation, OptimizerState};
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::AddToken;
use crate::cluster::protocol::proto::cluster_client::ClusterClient;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, Join, Proof, RunRequest, WorkerMessage, coordinator_message, worker_message,
};
use crate::cluster::protocol::shm::SharedRegion;
use crate::cluster::protocol::tls::{ClientTls, is_tls_failure};
use crate::cluster::protocol::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES, WORKER_MAX_MESSAGE_BYTES,
    WORKER_MAX_SEND_BYTES,
};
use crate::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};
use crate::data::{Dataset, DatasetKind, obtain_dataset};
use crate::telemetry::WorkerMetrics;
use crate::train::Replica;

/// How a worker is started.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordinator's URL, e.g. `http://10.0.0.5:50051`.
    pub coordinator: String,
    /// The run's shared token.
    pub token: Option<String>,
    /// `cpu` or `cuda:K`.
    pub device: String,
    /// Compute threads.
    pub threads: usize,
    /// The dataset folder (same resolution as the coordinator when absent).
    pub data_dir: Option<PathBuf>,
    /// How long to keep retrying the first connection.
    pub connect_timeout: Duration,
    /// How long to keep trying to get back into the run once it was joined and then lost.
    pub reconnect_timeout: Duration,
    /// HTTP/2 PING interval: a coordinator that misses two in a row is gone.
    pub keepalive: Duration,
    /// TLS settings for an `https://` coordinator.
    pub tls: Option<ClientTls>,
    /// The rank to ask for (the coordinator picks one when absent).
    pub rank: Option<u32>,
    /// Metrics to keep up to date (`--metrics-listen`).
    pub metrics: Option<WorkerMetrics>,
}

/// Longest wait between two attempts to reach the coordinator.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a session ended, and whether another may succeed.
enum Attempt {
    /// The run is over for this worker.
    Done,
    /// The coordinator was unreachable or went away; try again.
    Retry(String),
}

/// Whether an error means "try again later" (the coordinator is not reachable yet, restarted,
/// or asked this worker to come back) rather than "this worker cannot take part".
fn retryable(e: &ClusterError) -> bool {
    match e {
        ClusterError::Transport { source, .. } => !is_tls_failure(source),
        ClusterError::RefusedForNow(_) => true,
        ClusterError::Status { status, .. } => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Internal
                | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    }
}

/// Joins the coordinator and serves tasks until it says stop, reconnecting when it goes away.
pub async fn run_worker(opts: WorkerOptions) -> Result<(), ClusterError> {
    let device = parse_device(&opts.device)?;
    let mut data: Option<Arc<Dataset>> = None;
    let mut joined_once = false;
    let mut since = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut joined = false;
        let ended = session(&opts, &device, &mut data, &mut joined).await;
        if let Some(m) = &opts.metrics {
            m.connected(false);
        }
        let why = match ended {
            Ok(Attempt::Done) => return Ok(()),
            Ok(Attempt::Retry(why)) => why,
            Err(e) if retryable(&e) => e.to_string(),
            Err(e) => return Err(e),
        };
        if joined {
            // A session that got into the run restarts the window and the backoff.
            joined_once = true;
            since = Instant::now();
            backoff = Duration::from_millis(200);
        }
        let window = match joined_once {
            true => opts.reconnect_timeout,
            false => opts.connect_timeout,
        };
        if since.elapsed() >= window {
            return Err(ClusterError::Timeout {
                what: format!("the coordinator at {} ({why})", opts.coordinator),
                secs: window.as_secs(),
            });
        }
        if joined {
            tracing::warn!(%why, "lost the coordinator; reconnecting");
        } else {
            tracing::debug!(%why, "the coordinator is not reachable yet");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(opts: &WorkerOptions) -> Result<Channel, ClusterError> {
    let mut endpoint = Endpoint::from_shared(opts.coordinator.clone()).map_err(|e| {
        ClusterError::Setup(format!("bad coordinator URL {:?}: {e}", opts.coordinator))
    })?;
    match (opts.coordinator.starts_with("https://"), &opts.tls) {
        (true, tls) => {
            let tls = match tls {
                Some(tls) => tls.clone(),
                None => ClientTls::load(None, None, None, None)?,
            };
            endpoint =
                endpoint
                    .tls_config(tls.config())
                    .map_err(|source| ClusterError::Transport {
                        peer: opts.coordinator.clone(),
                        source,
                    })?;
        }
        (false, Some(_)) => {
            return Err(ClusterError::Setup(format!(
                "TLS options were given but the coordinator URL {} is not https://",
                opts.coordinator
            )));
        }
        (false, None) => {}
    }
    let endpoint = endpoint
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(opts.keepalive)
        .keep_alive_timeout(2 * opts.keepalive)
        .keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|source| ClusterError::Transport {
            peer: opts.coordinator.clone(),
            source,
        })
}

/// The dataset the run names, loaded once and kept across sessions.
async fn dataset(
    kind: DatasetKind,
    opts: &WorkerOptions,
    cache: &mut Option<Arc<Dataset>>,
) -> Result<Arc<Dataset>, ClusterError> {
    if let Some(d) = cache.as_ref().filter(|d| d.kind == kind) {
        return Ok(d.clone());
    }
    let data_dir = opts.data_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || obtain_dataset(kind, data_dir.as_deref()))
        .await
        .map_err(|e| ClusterError::Setup(format!("the dataset loader stopped: {e}")))??;
    let loaded = Arc::new(loaded);
    *cache = Some(loaded.clone());
    Ok(loaded)
}

/// One session; `joined` is set once the coordinator admitted this worker.
async fn session(
    opts: &WorkerOptions,
    device: &Device,
    cache: &mut Option<Arc<Dataset>>,
    joined: &mut bool,
) -> Result<Attempt, ClusterError> {
    let channel = connect(opts).await?;
    let auth = AddToken::new(opts.token.as_deref())
        .map_err(|s| ClusterError::Setup(s.message().to_string()))?;
    let mut client = ClusterClient::with_interceptor(channel, auth)
        .max_decoding_message_size(WORKER_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(WORKER_MAX_SEND_BYTES);
    let info = client
        .run(RunRequest {})
        .await
        .map_err(ClusterError::status("Run"))?
        .into_inner();
    if info.protocol_version != PROTOCOL_VERSION {
        return Err(ClusterError::Refused(format!(
            "the coordinator speaks protocol version {}, this worker speaks {PROTOCOL_VERSION}: run matching builds",
            info.protocol_version
        )));
    }
    let kind: DatasetKind = info.dataset.parse()?;
    let data = dataset(kind, opts, cache).await?;
    // A file that is not there (another host) or not ours just means payloads over gRPC.
    let shm = match info.shm_path.as_str() {
        "" => None,
        path => SharedRegion::open(Path::new(path))
            .inspect_err(|e| tracing::info!("weights and gradients over gRPC: {e}"))
            .ok(),
    };

    let (out_tx, out_rx) = mpsc::channel::<WorkerMessage>(64);
    let join = Join {
        protocol_version: PROTOCOL_VERSION,
        model_version: MODEL_VERSION.into(),
        dataset: kind.name().into(),
        device: opts.device.clone(),
        threads: opts.threads as u32,
        host: hostname(),
        pid: std::process::id(),
        rank: opts.rank,
        shm_nonce: shm.as_ref().map(SharedRegion::nonce),
    };
    out_tx
        .send(WorkerMessage {
            body: Some(worker_message::Body::Join(join)),
        })
        .await
        .map_err(|_| ClusterError::Setup("the outgoing stream closed".into()))?;
    let mut inbound = client
        .session(ReceiverStream::new(out_rx))
        .await
        .map_err(ClusterError::status("Session"))?
        .into_inner();
    let protocol = |what: String| ClusterError::Protocol {
        peer: opts.coordinator.clone(),
        what,
    };
    let refused = |r: crate::cluster::protocol::proto::Refusal| match r.retry {
        true => ClusterError::RefusedForNow(r.reason),
        false => ClusterError::Refused(r.reason),
    };
    // The coordinator first challenges this worker to prove it holds the run's data.
    match inbound
        .message()
        .await
        .map_err(ClusterError::status("Session"))?
        .and_then(|m| m.body)
    {
        Some(coordinator_message::Body::Challenge(c)) => {
            let held = data.clone();
            let proof = tokio::task::spawn_blocking(move || held.proof(&c.nonce))
                .await
                .map_err(|e| ClusterError::Setup(format!("hashing the dataset stopped: {e}")))?;
            out_tx
                .send(WorkerMessage {
                    body: Some(worker_message::Body::Proof(Proof { proof })),
                })
                .await
                .map_err(|_| ClusterError::Setup("the outgoing stream closed".into()))?;
        }
        Some(coordinator_message::Body::Refusal(r)) => return Err(refused(r)),
        None => return Ok(Attempt::Retry("the coordinator closed the session".into())),
        Some(_) => {
            return Err(protocol(
                "the session did not start with a data challenge".into(),
            ));
        }
    }
    let welcome = match inbound
        .message()
        .await
        .map_err(ClusterError::status("Session"))?
    {
        Some(CoordinatorMessage {
            body: Some(coordinator_message::Body::Welcome(w)),
            ..
        }) => w,
        Some(CoordinatorMessage {
            body: Some(coordinator_message::Body::Refusal(r)),
            ..
        }) => return Err(refused(r)),
        None => return Ok(Attempt::Retry("the coordinator closed the session".into())),
        _ => {
            return Err(protocol(
                "the session did not start with Welcome or Refusal".into(),
            ));
        }
    };
    *joined = true;
    if let Some(m) = &opts.metrics {
        m.connected(true);
    }
    let run = check_welcome(&welcome, data.train.shape())
        .map_err(|why| protocol(format!("{why} ({} images)", kind.name())))?;
    let spec = run.spec;
    tracing::info!(
        rank = welcome.rank,
        world = welcome.world_size,
        shared_memory = welcome.shm,
        "joined the run"
    );
    let shm = match (shm, welcome.shm) {
        (Some(region), true) => {
            if region.params() != spec.num_params() {
                return Err(protocol(format!(
                    "the shared file holds vectors of {} values, the model has {}",
                    region.params(),
                    spec.num_params()
                )));
            }
            Some(region)
        }
        (None, true) => {
            return Err(protocol(
                "it offered shared memory this worker never mapped".into(),
            ));
        }
        (_, false) => None,
    };
    let aggregation = run.aggregation;
    let reducer = match aggregation {
        Aggregation::Nccl => {
            let limit = Duration::from_secs(u64::from(welcome.nccl_timeout_s));
            Some(nccl_rendezvous(&welcome, device, limit, &mut inbound, &out_tx).await?)
        }
        Aggregation::CentralAdam | Aggregation::Allreduce => None,
    };
    // Replicas that step Adam themselves hold its state; the coordinator's State message
    // fills it in.
    let optimizer = run
        .lr
        .map(|lr| OptimizerState::new(vec![0.0; spec.num_params()], lr));
    let mut replica = Replica::new(spec, &spec.init(0), device)?;
    replica.set_noise(run.noise);
    let runner = TaskRunner::new(replica, device.clone(), data, shm, (optimizer, reducer))
        .with_metrics(opts.metrics.clone());
    match runner.serve(&mut inbound, out_tx).await {
        Ok(SessionEnd::Stopped) => Ok(Attempt::Done),
        Ok(SessionEnd::Dropped) => Ok(Attempt::Retry(
            "the coordinator ended the session without Stop".into(),
        )),
        Err(e) if retryable(&e) => Ok(Attempt::Retry(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Runs [`run_worker`] the way the `worker` binary does: a single-threaded runtime inside a
/// compute pool of `opts.threads`, so one thread reads the stream, computes and answers, and
/// the kernels' parallel loops start on it. Handing each message from an I/O thread to a compute
/// thread cost two wake-ups a step, which on a machine whose cores all compute means waiting
/// for a core each time.
pub fn run_worker_blocking(opts: WorkerOptions) -> Result<(), ClusterError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("compute-{i}"))
        .build()
        .map_err(|e| ClusterError::Setup(format!("starting the compute threads: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClusterError::Io {
            what: "starting the async runtime".into(),
            source,
        })?;
    pool.install(|| runtime.block_on(run_worker(opts)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
