//! The worker: joins a coordinator, proves it holds the same data, then computes the gradients
//! and embeddings of the shards it is sent until told to stop.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::auth::AddToken;
use super::proto::cluster_client::ClusterClient;
use super::proto::{
    CoordinatorMessage, EmbedResult, GradientResult, ImageSet, Join, RunRequest, Task, WorkerError,
    WorkerMessage, coordinator_message, task, worker_message,
};
use super::service::{CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES};
use super::shm::SharedRegion;
use super::wire::{decode_f32, encode_f32};
use super::{ClusterError, MODEL_VERSION, PROTOCOL_VERSION};
use crate::data::{Dataset, DatasetKind, obtain_dataset};
use crate::model::ModelSpec;
use crate::pairs::Pair;
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

    let stopped = serve_tasks(spec, device, &dataset, shm, &mut inbound, out_tx).await?;
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

fn load_error(e: crate::train::TrainError) -> ClusterError {
    ClusterError::Setup(format!("loading weights: {e}"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs tasks in arrival order, each once the weights it names have arrived, on the calling
/// thread (computing blocks it, which is the point: nothing else runs in a worker). Returns
/// whether the coordinator said Stop.
async fn serve_tasks(
    spec: ModelSpec,
    device: Device,
    data: &Dataset,
    mut shm: Option<(SharedRegion, usize)>,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    out: mpsc::Sender<WorkerMessage>,
) -> Result<bool, ClusterError> {
    let mut shared_weights = vec![0.0f32; spec.num_params()];
    let mut replica = Replica::new(spec, &spec.init(0), &device)
        .map_err(|e| ClusterError::Setup(format!("building the replica: {e}")))?;
    let mut version = 0u64;
    let mut pending: VecDeque<Task> = VecDeque::new();
    // Where this worker's time went, logged at the end: idle (waiting for the coordinator),
    // applying weights, computing, handing results to the network.
    let (mut idle, mut apply, mut compute, mut send) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let summary = |idle: f64, apply: f64, compute: f64, send: f64| {
        tracing::info!(
            idle_s = idle,
            apply_weights_s = apply,
            compute_s = compute,
            send_s = send,
            "worker time split"
        );
    };
    loop {
        let waited = Instant::now();
        let Some(msg) = inbound.message().await.map_err(status("Session"))? else {
            break;
        };
        idle += waited.elapsed().as_secs_f64();
        match msg.body {
            Some(coordinator_message::Body::Weights(w)) => {
                let start = Instant::now();
                let loaded = match (&shm, w.in_shm) {
                    (Some((region, _)), true) => {
                        // A stale message: newer weights (and their message) are on the way.
                        region.read_weights(w.version, &mut shared_weights) && {
                            replica.set_weights(&shared_weights).map_err(load_error)?;
                            true
                        }
                    }
                    (None, true) => {
                        return Err(ClusterError::Protocol {
                            peer: "coordinator".into(),
                            what: "weights in shared memory this worker has not mapped".into(),
                        });
                    }
                    (_, false) => {
                        let values =
                            decode_f32(&w.values).ok_or_else(|| ClusterError::Protocol {
                                peer: "coordinator".into(),
                                what: "weights of odd byte length".into(),
                            })?;
                        replica.set_weights(&values).map_err(load_error)?;
                        true
                    }
                };
                if loaded {
                    version = w.version;
                }
                apply += start.elapsed().as_secs_f64();
            }
            Some(coordinator_message::Body::Task(t)) => pending.push_back(t),
            Some(coordinator_message::Body::Stop(s)) => {
                tracing::info!(reason = %s.reason, "stopping");
                summary(idle, apply, compute, send);
                return Ok(true);
            }
            _ => {}
        }
        while pending
            .front()
            .is_some_and(|t| t.weights_version <= version)
        {
            if let Some(t) = pending.pop_front() {
                let start = Instant::now();
                let slot = shm.as_mut().map(|(region, rank)| (region, *rank));
                let reply = run_task(&mut replica, data, slot, t);
                let sending = Instant::now();
                compute += sending.duration_since(start).as_secs_f64();
                if out.send(reply).await.is_err() {
                    return Ok(false);
                }
                send += sending.elapsed().as_secs_f64();
            }
        }
    }
    summary(idle, apply, compute, send);
    Ok(false)
}

fn run_task(
    replica: &mut Replica,
    data: &Dataset,
    slot: Option<(&mut SharedRegion, usize)>,
    t: Task,
) -> WorkerMessage {
    let start = Instant::now();
    let id = t.id;
    let body = match t.kind {
        Some(task::Kind::Gradient(g)) => {
            if g.first.len() != g.second.len() || g.first.len() != g.same.len() {
                Err("gradient task with lists of different lengths".to_string())
            } else {
                let pairs: Vec<Pair> = g
                    .first
                    .iter()
                    .zip(&g.second)
                    .zip(&g.same)
                    .map(|((&a, &b), &same)| Pair { a, b, same })
                    .collect();
                replica
                    .pair_gradient(&data.train, &pairs)
                    .map_err(|e| e.to_string())
                    .and_then(|step| {
                        let correct = step
                            .similarity
                            .iter()
                            .zip(&pairs)
                            .filter(|(s, p)| (**s > 0.5) == p.same)
                            .count();
                        let (grad, in_shm) = match slot {
                            Some((region, rank)) => {
                                region
                                    .write_gradient(rank, &step.grad)
                                    .map_err(|e| e.to_string())?;
                                (Default::default(), true)
                            }
                            None => (encode_f32(&step.grad), false),
                        };
                        Ok(worker_message::Body::Gradient(GradientResult {
                            id,
                            grad,
                            loss_sum: f64::from(step.loss_sum),
                            correct: correct as u32,
                            pairs: pairs.len() as u32,
                            compute_s: start.elapsed().as_secs_f64(),
                            in_shm,
                        }))
                    })
            }
        }
        Some(task::Kind::Embed(e)) => {
            let images = if e.set == ImageSet::Test as i32 {
                &data.test
            } else {
                &data.train
            };
            replica
                .embed(images, &e.indices)
                .map_err(|e| e.to_string())
                .map(|values| {
                    worker_message::Body::Embedding(EmbedResult {
                        id,
                        width: replica.network().spec().out_width() as u32,
                        values: encode_f32(&values),
                        compute_s: start.elapsed().as_secs_f64(),
                    })
                })
        }
        None => Err("a task without a kind".to_string()),
    };
    let body = body.unwrap_or_else(|message| {
        tracing::error!(task = id, %message, "task failed");
        worker_message::Body::Error(WorkerError { id, message })
    });
    WorkerMessage { body: Some(body) }
}
