//! The worker: joins a coordinator, proves it holds the same data, then computes the gradients
//! and embeddings of the shards it is sent until told to stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::aggregation::Aggregation;
use super::auth::AddToken;
use super::proto::cluster_client::ClusterClient;
use super::proto::{
    CoordinatorMessage, Join, RunRequest, WorkerMessage, coordinator_message, worker_message,
};
use super::replica_step::{Reducer, Replicated};
use super::service::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES};
use super::shm::SharedRegion;
use super::tasks::TaskRunner;
use super::{ClusterError, MODEL_VERSION, PROTOCOL_VERSION};
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

/// Parses `cpu` / `cuda:K` into a Candle device.
pub fn parse_device(name: &str) -> Result<Device, ClusterError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = name
        .strip_prefix("cuda:")
        .and_then(|k| k.parse::<usize>().ok())
    else {
        return Err(ClusterError::Setup(format!(
            "unknown device {name:?}: use cpu or cuda:K"
        )));
    };
    if !cfg!(feature = "cuda") {
        return Err(ClusterError::Setup(format!(
            "device {name} needs CUDA, but this build has none: rebuild with `cargo build --release --features cuda` (see ../shared/gpu/README.md)"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| ClusterError::Setup(format!("opening {name}: {e}")))
}

fn status(call: &'static str) -> impl Fn(tonic::Status) -> ClusterError {
    move |s| match s.code() {
        tonic::Code::Unauthenticated => ClusterError::Refused(s.message().to_string()),
        _ => ClusterError::Status {
            call,
            status: Box::new(s),
        },
    }
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
        .map_err(status("Run"))?
        .into_inner();
    if info.protocol_version != PROTOCOL_VERSION {
        return Err(ClusterError::Refused(format!(
            "the coordinator speaks protocol version {}, this worker speaks {PROTOCOL_VERSION}: run matching builds",
            info.protocol_version
        )));
    }
    let kind: DatasetKind = info
        .dataset
        .parse()
        .map_err(|e| ClusterError::Setup(format!("{e}")))?;
    let data_dir = opts.data_dir.clone();
    let dataset = tokio::task::spawn_blocking(move || obtain_dataset(kind, data_dir.as_deref()))
        .await
        .map_err(|e| ClusterError::Setup(format!("loading the dataset: {e}")))?
        .map_err(|e| ClusterError::Setup(format!("loading the dataset: {e}")))?;
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
        .map_err(status("Session"))?
        .into_inner();
    let welcome = match inbound.message().await.map_err(status("Session"))? {
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
    let replicated = match aggregation {
        Aggregation::Coordinator => None,
        Aggregation::Allreduce => Some(Reducer::Coordinator),
        Aggregation::Nccl => {
            let limit = Duration::from_secs(u64::from(welcome.nccl_timeout_s));
            let group = nccl_rendezvous(&welcome, &device, limit, &mut inbound, &out_tx).await?;
            Some(group)
        }
    };
    let replicated = match replicated {
        Some(reducer) => {
            let cfg: crate::config::TrainConfig = serde_json::from_str(&welcome.config_json)
                .map_err(|e| ClusterError::Protocol {
                    peer: opts.coordinator.clone(),
                    what: format!("bad run configuration: {e}"),
                })?;
            Some(Replicated::new(cfg.lr, spec.num_params(), reducer))
        }
        None => None,
    };
    let replica = Replica::new(spec, &spec.init(0), &device)
        .map_err(|e| ClusterError::Setup(format!("building the replica: {e}")))?;
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
        .map_err(|e| ClusterError::Setup(format!("starting the async runtime: {e}")))?;
    pool.install(|| runtime.block_on(run_worker(opts)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// NCCL's rendezvous through the coordinator: rank 0 creates the unique id and sends it; every
/// rank gets it relayed back, forms the communicator (within `limit`) and says so.
#[cfg(feature = "nccl")]
async fn nccl_rendezvous(
    welcome: &super::proto::Welcome,
    device: &Device,
    limit: Duration,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    out: &mpsc::Sender<WorkerMessage>,
) -> Result<Reducer, ClusterError> {
    use super::proto::{NcclId, NcclReady};
    use crate::nccl::NcclGroup;
    let send = |body| async move {
        out.send(WorkerMessage { body: Some(body) })
            .await
            .map_err(|_| ClusterError::Setup("the outgoing stream closed".into()))
    };
    if welcome.rank == 0 {
        let id = crate::nccl::unique_id().map_err(|e| ClusterError::Setup(e.to_string()))?;
        send(worker_message::Body::NcclId(NcclId {
            id: id.to_vec().into(),
        }))
        .await?;
    }
    let id = match tokio::time::timeout(limit, inbound.message()).await {
        Err(_) => {
            return Err(ClusterError::Timeout {
                what: "the coordinator to relay rank 0's NCCL id".into(),
                secs: limit.as_secs(),
            });
        }
        Ok(msg) => match msg.map_err(status("Session"))?.and_then(|m| m.body) {
            Some(coordinator_message::Body::NcclId(n)) => n.id,
            _ => {
                return Err(ClusterError::Protocol {
                    peer: "coordinator".into(),
                    what: "expected the NCCL id".into(),
                });
            }
        },
    };
    let (rank, world) = (welcome.rank as usize, welcome.world_size as usize);
    // Blocking is fine: this thread has nothing else to do until the communicator forms.
    let group = NcclGroup::join(&id, rank, world, device, limit)
        .map_err(|e| ClusterError::Setup(e.to_string()))?;
    send(worker_message::Body::NcclReady(NcclReady {
        rank: welcome.rank,
    }))
    .await?;
    tracing::info!(rank, world, "NCCL communicator formed");
    Ok(Reducer::Nccl(
        group,
        super::replica_step::Watchdog::start(limit),
    ))
}

/// Without NCCL compiled in, an NCCL run is refused with what to do.
#[cfg(not(feature = "nccl"))]
async fn nccl_rendezvous(
    _welcome: &super::proto::Welcome,
    _device: &Device,
    _limit: Duration,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    out: &mpsc::Sender<WorkerMessage>,
) -> Result<Reducer, ClusterError> {
    let message = "this worker was built without NCCL: rebuild it with `cargo build --release --features nccl` (see ../shared/gpu/README.md)".to_string();
    let _ = out
        .send(WorkerMessage {
            body: Some(worker_message::Body::Error(super::proto::WorkerError {
                id: 0,
                message: message.clone(),
            })),
        })
        .await;
    // Let the error reach the coordinator before this process exits: it answers by ending
    // the session.
    let _ = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await;
    Err(ClusterError::Setup(message))
}
