//! The coordinator's gRPC service: takes each session's Join, hands it to the admission gate,
//! and serves the cluster with health and reflection, over TLS when asked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::admission::{Admission, Gate, JOIN_DEADLINE};
use super::events::Event;
use super::rank_table::RankTable;
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::CheckToken;
use crate::cluster::protocol::proto::cluster_server::{Cluster, ClusterServer};
use crate::cluster::protocol::proto::{
    CoordinatorMessage, FILE_DESCRIPTOR_SET, RunInfo, RunRequest, WorkerMessage, worker_message,
};
use crate::cluster::protocol::tls::ServerTls;
use crate::cluster::protocol::transport::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES,
};

/// What the server lets peers do.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// HTTP/2 PING interval: a worker that does not answer two in a row (a vanished host, a
    /// stopped process) has its session ended.
    pub keepalive: Duration,
    /// Largest message in either direction (see `transport::message_limit`).
    pub message_bytes: usize,
    /// Calls in progress at once over all connections (sessions are calls that last).
    pub calls: usize,
}

/// The `Cluster` service.
pub struct CoordinatorService {
    gate: Arc<Gate>,
}

impl CoordinatorService {
    /// A service that admits workers into the free ranks of `ranks` and reports them and their
    /// messages on `events`.
    pub fn new(admission: Admission, ranks: RankTable, events: mpsc::Sender<Event>) -> Self {
        CoordinatorService {
            gate: Arc::new(Gate::new(admission, ranks, events)),
        }
    }
}

#[tonic::async_trait]
impl Cluster for CoordinatorService {
    async fn run(&self, _req: Request<RunRequest>) -> Result<Response<RunInfo>, Status> {
        Ok(Response::new(self.gate.run_info()))
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
        // A peer that cannot even open a session properly is told why, and the operator sees
        // who it was.
        let refuse = |status: Status| {
            tracing::warn!(peer = %addr, reason = %status.message(), "refused a session before Join");
            Err(status)
        };
        let join = match tokio::time::timeout(JOIN_DEADLINE, inbound.message()).await {
            Err(_) => {
                return refuse(Status::deadline_exceeded(format!(
                    "no Join within {} s",
                    JOIN_DEADLINE.as_secs()
                )));
            }
            Ok(Err(status)) => return refuse(status),
            Ok(Ok(Some(WorkerMessage {
                body: Some(worker_message::Body::Join(j)),
            }))) => j,
            Ok(Ok(Some(_))) => {
                return refuse(Status::invalid_argument(
                    "the first message of a session must be Join",
                ));
            }
            Ok(Ok(None)) => {
                return refuse(Status::invalid_argument("the session closed before Join"));
            }
        };
        // The rest (the challenge, its answer, the rank) needs the response stream open, so it
        // runs beside it.
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.gate.clone().admit(join, inbound, tx, addr));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the cluster, the standard health service and server reflection on `listener` until
/// `shutdown` completes. Health and reflection answer without the token so that Kubernetes
/// probes and stock gRPC tools work.
/// With `tls`, every connection is TLS (mutual when it names a client CA), health and reflection
/// included.
pub async fn serve(
    listener: TcpListener,
    service: CoordinatorService,
    (token, tls): (&str, Option<&ServerTls>),
    limits: ServerLimits,
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
        .max_decoding_message_size(limits.message_bytes)
        .max_encoding_message_size(limits.message_bytes);
    let mut builder = tonic::transport::Server::builder()
        // A worker needs one session and a few short calls; every stream held is bounded by
        // the message limit and the windows.
        .max_concurrent_streams(Some(8))
        .concurrency_limit_per_connection(8)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.calls));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.config())
            .map_err(|source| ClusterError::Transport {
                peer: peer.clone(),
                source,
            })?;
    }
    builder
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(2 * limits.keepalive))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
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
