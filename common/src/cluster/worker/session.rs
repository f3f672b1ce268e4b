//! A worker's session with the coordinator: connect, learn the run, load its data, join (and
//! prove the same data), set up the reducer, then hand the stream to the task loop until Stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::device::parse_device;
use super::nccl_join::nccl_rendezvous;
use super::reducer::Reducer;
use super::task_loop::TaskRunner;
use crate::aggregation::{Aggregation, OptimizerState};
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::AddToken;
use crate::cluster::protocol::proto::cluster_client::ClusterClient;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, Join, RunRequest, WorkerMessage, coordinator_message, worker_message,
};
use crate::cluster::protocol::shm::SharedRegion;
use crate::cluster::protocol::transport::{
    CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use crate::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};
use crate::data::{DatasetKind, obtain_dataset};
use crate::model::ModelSpec;
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
    /// The rank to ask for (the coordinator picks one when absent).
    pub rank: Option<u32>,
}

async fn connect(opts: &WorkerOptions) -> Result<Channel, ClusterError> {
    let endpoint = Endpoint::from_shared(opts.coordinator.clone())
        .map_err(|e| {
            ClusterError::Setup(format!("bad coordinator URL {:?}: {e}", opts.coordinator))
        })?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true);
    let deadline = Instant::now() + opts.connect_timeout;
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) if Instant::now() >= deadline => {
                return Err(ClusterError::Transport {
                    peer: opts.coordinator.clone(),
                    source: e,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Joins the coordinator and serves tasks until it says stop.
pub async fn run_worker(opts: WorkerOptions) -> Result<(), ClusterError> {
    let device = parse_device(&opts.device)?;
    let channel = connect(&opts).await?;
    let auth = AddToken::new(opts.token.as_deref())
        .map_err(|s| ClusterError::Setup(s.message().to_string()))?;
    let mut client = ClusterClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
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
    let data_dir = opts.data_dir.clone();
    let dataset = tokio::task::spawn_blocking(move || obtain_dataset(kind, data_dir.as_deref()))
        .await
        .map_err(|e| ClusterError::Setup(format!("the dataset loader stopped: {e}")))??;
    let dataset = Arc::new(dataset);
    let digest = dataset.digest();
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
        data_digest: digest,
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
    let welcome = match inbound
        .message()
        .await
        .map_err(ClusterError::status("Session"))?
    {
        Some(CoordinatorMessage {
            body: Some(coordinator_message::Body::Welcome(w)),
        }) => w,
        Some(CoordinatorMessage {
            body: Some(coordinator_message::Body::Refusal(r)),
        }) => {
            return Err(ClusterError::Refused(r.reason));
        }
        _ => {
            let what = "the session did not start with Welcome or Refusal".into();
            return Err(ClusterError::Protocol {
                peer: opts.coordinator.clone(),
                what,
            });
        }
    };
    let spec: ModelSpec =
        serde_json::from_str(&welcome.model_spec_json).map_err(|e| ClusterError::Protocol {
            peer: opts.coordinator.clone(),
            what: format!("bad model spec: {e}"),
        })?;
    tracing::info!(
        rank = welcome.rank,
        world = welcome.world_size,
        shared_memory = welcome.shm,
        "joined the run"
    );
    let shm = match (shm, welcome.shm) {
        (Some(region), true) => {
            if region.params() != spec.num_params() || welcome.rank as usize >= region.slots() {
                return Err(ClusterError::Protocol {
                    peer: opts.coordinator.clone(),
                    what: format!(
                        "the shared file holds {} slots of {} values, this worker is rank {} of a model with {}",
                        region.slots(),
                        region.params(),
                        welcome.rank,
                        spec.num_params()
                    ),
                });
            }
            Some((region, welcome.rank as usize))
        }
        (None, true) => {
            let what = "it offered shared memory this worker never mapped".into();
            return Err(ClusterError::Protocol {
                peer: opts.coordinator.clone(),
                what,
            });
        }
        (_, false) => None,
    };

    let aggregation =
        Aggregation::from_name(&welcome.aggregation).ok_or_else(|| ClusterError::Protocol {
            peer: opts.coordinator.clone(),
            what: format!("unknown aggregation {:?}", welcome.aggregation),
        })?;
    let reducer = match aggregation {
        Aggregation::CentralAdam => None,
        Aggregation::Allreduce => Some(Reducer::SumOnCoordinator),
        Aggregation::Nccl => {
            let limit = Duration::from_secs(u64::from(welcome.nccl_timeout_s));
            let group = nccl_rendezvous(&welcome, &device, limit, &mut inbound, &out_tx).await?;
            Some(group)
        }
    };
    // Replicas that step Adam themselves hold its state; the first Weights message sets the
    // weights.
    let replicated = match reducer {
        Some(reducer) => {
            let cfg: crate::config::TrainConfig = serde_json::from_str(&welcome.config_json)
                .map_err(|e| ClusterError::Protocol {
                    peer: opts.coordinator.clone(),
                    what: format!("bad run configuration: {e}"),
                })?;
            let state = OptimizerState::new(vec![0.0; spec.num_params()], cfg.lr);
            Some((state, reducer))
        }
        None => None,
    };
    let replica = Replica::new(spec, &spec.init(0), &device)?;
    let runner = TaskRunner::new(replica, device, &dataset, shm, replicated);
    let stopped = runner.serve(&mut inbound, out_tx).await?;
    if !stopped {
        return Err(ClusterError::Protocol {
            peer: opts.coordinator,
            what: "the coordinator ended the session without Stop".into(),
        });
    }
    Ok(())
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
