//! The coordinator's gRPC service: admits workers into ranks and hands each admitted session to
//! the engine as a [`WorkerLink`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::events::{Event, WorkerLink};
use super::rank_table::{ClaimRefused, RankTable};
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
    ranks: RankTable,
    events: mpsc::Sender<Event>,
    next_session: Arc<AtomicU64>,
}

impl CoordinatorService {
    /// A service that admits workers into the free ranks of `ranks` and reports them and their
    /// messages on `events`.
    pub fn new(admission: Admission, ranks: RankTable, events: mpsc::Sender<Event>) -> Self {
        CoordinatorService {
            admission: Arc::new(admission),
            ranks,
            events,
            next_session: Arc::new(AtomicU64::new(1)),
        }
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
        let refuse = |reason: String, retry: bool| {
            tracing::warn!(%peer, %reason, "refused a worker");
            let tx = tx.clone();
            async move {
                let _ = tx
                    .send(message(coordinator_message::Body::Refusal(Refusal {
                        reason,
                        retry,
                    })))
                    .await;
            }
        };
        if let Err(reason) = self.admission.check(&join) {
            refuse(reason, false).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let rank = match self.ranks.claim(join.rank, session) {
            Ok(rank) => rank,
            Err(ClaimRefused::OutOfRange(reason)) => {
                refuse(reason, false).await;
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
            Err(ClaimRefused::Taken(reason)) => {
                refuse(reason, true).await;
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
        };
        let shm = match (&self.admission.shm, join.shm_nonce) {
            (Some((_, nonce)), Some(echoed)) => *nonce == echoed,
            _ => false,
        };
        let welcome = Welcome {
            rank,
            world_size: self.admission.world_size,
            model_spec_json: self.admission.spec_json.clone(),
            config_json: self.admission.config_json.clone(),
            shm,
            aggregation: self.admission.aggregation.name().into(),
            nccl_timeout_s: self.admission.nccl_timeout_s,
        };
        if tx
            .send(message(coordinator_message::Body::Welcome(welcome)))
            .await
            .is_err()
        {
            self.ranks.release(rank, session);
            return Err(Status::unavailable("the coordinator is shutting down"));
        }
        tracing::info!(rank, %peer, device = %join.device, threads = join.threads, shm, "worker joined");
        let link = WorkerLink {
            session,
            rank,
            peer,
            join,
            shm,
            to_worker: tx,
        };
        if self.events.send(Event::Joined(link)).await.is_err() {
            self.ranks.release(rank, session);
            return Err(Status::unavailable(
                "the coordinator no longer admits workers",
            ));
        }
        // Every message goes to the engine in arrival order; the end of the stream frees the
        // rank for a replacement.
        let (events, ranks) = (self.events.clone(), self.ranks.clone());
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        let event = Event::Message {
                            session,
                            at: Instant::now(),
                            message,
                        };
                        if events.send(event).await.is_err() {
                            break "the coordinator stopped listening".to_string();
                        }
                    }
                    Ok(None) => break "it closed its stream".to_string(),
                    Err(s) => break format!("its stream failed: {}", s.message()),
                }
            };
            ranks.release(rank, session);
            let _ = events.send(Event::Ended { session, why }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the cluster, the standard health service and server reflection on `listener` until
/// `shutdown` completes. Health and reflection answer without the token so that Kubernetes
/// probes and stock gRPC tools work.
/// `keepalive` is the HTTP/2 PING interval: a worker that does not answer two of them in a row
/// (a vanished host, a stopped process) has its session ended.
pub async fn serve(
    listener: TcpListener,
    service: CoordinatorService,
    token: &str,
    keepalive: Duration,
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
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(2 * keepalive))
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
