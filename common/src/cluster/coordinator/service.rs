//! The coordinator's gRPC service: admits workers into ranks and hands each admitted session to
//! the engine as a [`WorkerLink`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::links::{Inbound, WorkerLink};
use crate::aggregation::Aggregation;
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::CheckToken;
use crate::cluster::protocol::proto::cluster_server::{Cluster, ClusterServer};
use crate::cluster::protocol::proto::{
    CoordinatorMessage, FILE_DESCRIPTOR_SET, Join, Refusal, RunInfo, RunRequest, Welcome,
    WorkerMessage, coordinator_message, worker_message,
};
use crate::cluster::protocol::transport::{
    CONNECTION_WINDOW_BYTES, MAX_MESSAGE_BYTES, STREAM_WINDOW_BYTES,
};
use crate::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};

/// What a joining worker must match, and what it is told when admitted.
pub struct Admission {
    /// Dataset name of the run.
    pub dataset: String,
    /// Digest of the coordinator's decoded data.
    pub digest: String,
    /// Number of workers the run trains with.
    pub world_size: u32,
    /// Model layout, JSON.
    pub spec_json: String,
    /// Run configuration, JSON.
    pub config_json: String,
    /// The shared file for workers on this host, and the nonce in its header.
    pub shm: Option<(String, u64)>,
    /// Where gradients meet.
    pub aggregation: Aggregation,
    /// Seconds workers have to form an NCCL communicator.
    pub nccl_timeout_s: u32,
}

impl Admission {
    /// Why `join` cannot take part in this run, if it cannot.
    fn check(&self, join: &Join) -> Result<(), String> {
        if join.protocol_version != PROTOCOL_VERSION {
            return Err(format!(
                "the worker speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}: run matching builds",
                join.protocol_version
            ));
        }
        if join.model_version != MODEL_VERSION {
            return Err(format!(
                "the worker's model is {:?}, this coordinator's is {MODEL_VERSION:?}: run matching builds",
                join.model_version
            ));
        }
        if join.dataset != self.dataset {
            return Err(format!(
                "the worker loaded {:?}, this run trains on {:?}",
                join.dataset, self.dataset
            ));
        }
        if join.data_digest != self.digest {
            return Err(format!(
                "the worker's {} data has digest {}, the coordinator's has {}: it holds different files (check its --data-dir)",
                join.dataset, join.data_digest, self.digest
            ));
        }
        Ok(())
    }
}

/// The `Cluster` service.
pub struct CoordinatorService {
    admission: Arc<Admission>,
    /// Which ranks are taken.
    ranks: Arc<Mutex<Vec<bool>>>,
    links: mpsc::Sender<WorkerLink>,
}

impl CoordinatorService {
    /// A service that admits up to `admission.world_size` workers and passes them to `links`.
    pub fn new(admission: Admission, links: mpsc::Sender<WorkerLink>) -> Self {
        let world = admission.world_size as usize;
        CoordinatorService {
            admission: Arc::new(admission),
            ranks: Arc::new(Mutex::new(vec![false; world])),
            links,
        }
    }

    /// Takes the requested rank, or the lowest free one.
    fn claim_rank(&self, requested: Option<u32>) -> Result<u32, String> {
        let world = self.admission.world_size;
        let mut taken = self
            .ranks
            .lock()
            .map_err(|_| "the rank table is unusable".to_string())?;
        let rank = match requested {
            Some(r) if r >= world => {
                return Err(format!("rank {r} is out of range for {world} workers"));
            }
            Some(r) if taken[r as usize] => return Err(format!("rank {r} is already taken")),
            Some(r) => r,
            None => match taken.iter().position(|t| !t) {
                Some(r) => r as u32,
                None => return Err(format!("the run already has all {world} workers")),
            },
        };
        taken[rank as usize] = true;
        Ok(rank)
    }
}

fn message(body: coordinator_message::Body) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage { body: Some(body) })
}

#[tonic::async_trait]
impl Cluster for CoordinatorService {
    async fn run(&self, _req: Request<RunRequest>) -> Result<Response<RunInfo>, Status> {
        Ok(Response::new(RunInfo {
            protocol_version: PROTOCOL_VERSION,
            model_version: MODEL_VERSION.into(),
            dataset: self.admission.dataset.clone(),
            world_size: self.admission.world_size,
            shm_path: self
                .admission
                .shm
                .as_ref()
                .map(|(path, _)| path.clone())
                .unwrap_or_default(),
        }))
    }

    type SessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let addr = req
            .remote_addr()
            .map_or_else(|| "unknown address".to_string(), |a| a.to_string());
        let mut inbound = req.into_inner();
        let join = match inbound.message().await? {
            Some(WorkerMessage {
                body: Some(worker_message::Body::Join(j)),
            }) => j,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be Join",
                ));
            }
            None => return Err(Status::invalid_argument("the session closed before Join")),
        };
        let peer = format!("{}:{} at {addr}", join.host, join.pid);
        let (tx, rx) = mpsc::channel(64);
        let refuse = |reason: String| {
            tracing::warn!(%peer, %reason, "refused a worker");
            let tx = tx.clone();
            async move {
                let _ = tx
                    .send(message(coordinator_message::Body::Refusal(Refusal {
                        reason,
                    })))
                    .await;
            }
        };
        if let Err(reason) = self.admission.check(&join) {
            refuse(reason).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let world = self.admission.world_size;
        let rank = match self.claim_rank(join.rank) {
            Ok(rank) => rank,
            Err(reason) => {
                refuse(reason).await;
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
        };
        let shm = match (&self.admission.shm, join.shm_nonce) {
            (Some((_, nonce)), Some(echoed)) => *nonce == echoed,
            _ => false,
        };
        let welcome = Welcome {
            rank,
            world_size: world,
            model_spec_json: self.admission.spec_json.clone(),
            config_json: self.admission.config_json.clone(),
            shm,
            aggregation: self.admission.aggregation.name().into(),
            nccl_timeout_s: self.admission.nccl_timeout_s,
        };
        tx.send(message(coordinator_message::Body::Welcome(welcome)))
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        let (in_tx, in_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let next = match inbound.message().await {
                    Ok(Some(m)) => Inbound::Message(Instant::now(), m),
                    Ok(None) => Inbound::Lost("it closed its stream".into()),
                    Err(s) => Inbound::Lost(format!("its stream failed: {}", s.message())),
                };
                let lost = matches!(next, Inbound::Lost(_));
                if in_tx.send(next).await.is_err() || lost {
                    break;
                }
            }
        });
        tracing::info!(rank, %peer, device = %join.device, threads = join.threads, shm, "worker joined");
        let link = WorkerLink {
            rank,
            peer,
            join,
            shm,
            to_worker: tx,
            from_worker: in_rx,
        };
        self.links
            .send(link)
            .await
            .map_err(|_| Status::unavailable("the coordinator no longer admits workers"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the cluster, the standard health service and server reflection on `listener` until
/// `shutdown` completes. Health and reflection answer without the token so that Kubernetes
/// probes and stock gRPC tools work.
pub async fn serve(
    listener: TcpListener,
    service: CoordinatorService,
    token: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    let peer = listener
        .local_addr()
        .map_or_else(|_| "listener".into(), |a| a.to_string());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(
            "siamese.cluster.v1.Cluster",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ClusterError::Setup(format!("building the reflection service: {e}")))?;
    let cluster = ClusterServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            cluster,
            CheckToken::new(token),
        ))
        // The server's own tcp_nodelay setting only covers listeners it binds itself; without
        // it here Nagle's algorithm holds back the last segment of every message.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|source| ClusterError::Transport { peer, source })
}
