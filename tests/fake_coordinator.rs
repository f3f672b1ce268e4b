//! A coordinator that lies: it serves the cluster protocol over real gRPC, answers `Run` and
//! opens a session the way the real one does, then sends a worker what the test scripts, and
//! keeps what the worker answers. Only a real worker binary is on the other side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use siamese_common::cluster::protocol::proto::cluster_server::{Cluster, ClusterServer};
use siamese_common::cluster::protocol::proto::{
    Challenge, CoordinatorMessage, RunInfo, RunRequest, Stop, Welcome, WorkerMessage,
    coordinator_message, worker_message,
};
use siamese_common::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};
use siamese_common::config::TrainConfig;
use siamese_common::data::DatasetKind;
use siamese_common::model::ModelSpec;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the fake says, in order.
#[derive(Clone)]
pub struct Script {
    /// The answer to `Run`.
    pub info: RunInfo,
    /// Sent once the worker has answered the data challenge; `None` ends the session there.
    pub welcome: Option<Welcome>,
    /// Sent after the welcome; then the fake waits for `answers` replies and says Stop.
    pub then: Vec<CoordinatorMessage>,
    /// Replies to wait for before Stop.
    pub answers: usize,
}

impl Script {
    /// An honest opening for an MNIST run with one worker whose Adam is the coordinator's.
    pub fn honest(spec: &ModelSpec) -> Script {
        Script {
            info: RunInfo {
                protocol_version: PROTOCOL_VERSION,
                model_version: MODEL_VERSION.into(),
                dataset: "mnist".into(),
                world_size: 1,
                shm_path: String::new(),
            },
            welcome: Some(Welcome {
                rank: 0,
                world_size: 1,
                model_spec_json: serde_json::to_string(spec).unwrap(),
                config_json: serde_json::to_string(
                    &TrainConfig::defaults(DatasetKind::Mnist).unwrap(),
                )
                .unwrap(),
                shm: false,
                aggregation: "coordinator".into(),
                nccl_timeout_s: 10,
            }),
            then: Vec::new(),
            answers: 0,
        }
    }
}

/// Wraps a message body.
pub fn message(body: coordinator_message::Body) -> CoordinatorMessage {
    CoordinatorMessage {
        body: Some(body),
        tasks: Vec::new(),
    }
}

struct Service {
    script: Script,
    replies: Arc<Mutex<Vec<WorkerMessage>>>,
}

#[tonic::async_trait]
impl Cluster for Service {
    async fn run(&self, _req: Request<RunRequest>) -> Result<Response<RunInfo>, Status> {
        Ok(Response::new(self.script.info.clone()))
    }

    type SessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (script, replies) = (self.script.clone(), self.replies.clone());
        tokio::spawn(async move {
            let send = |m: CoordinatorMessage| {
                let tx = tx.clone();
                async move { tx.send(Ok(m)).await.is_ok() }
            };
            // Join, then the challenge and its proof, as with the real coordinator.
            let Ok(Some(_join)) = inbound.message().await else {
                return;
            };
            let challenge = Challenge {
                nonce: vec![7u8; 32].into(),
            };
            if !send(message(coordinator_message::Body::Challenge(challenge))).await {
                return;
            }
            let Ok(Some(_proof)) = inbound.message().await else {
                return;
            };
            let Some(welcome) = script.welcome else {
                return;
            };
            if !send(message(coordinator_message::Body::Welcome(welcome))).await {
                return;
            }
            for m in script.then {
                if !send(m).await {
                    return;
                }
            }
            let mut seen = 0;
            while seen < script.answers {
                match tokio::time::timeout(Duration::from_secs(60), inbound.message()).await {
                    Ok(Ok(Some(m))) => {
                        replies.lock().unwrap().push(m);
                        seen += 1;
                    }
                    _ => return,
                }
            }
            let stop = Stop {
                reason: "the fake coordinator is done".into(),
                failed: false,
            };
            send(message(coordinator_message::Body::Stop(stop))).await;
            // Hold the stream until the worker closes its side.
            while let Ok(Some(_)) = inbound.message().await {}
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running fake coordinator; dropping it stops the server.
pub struct FakeCoordinator {
    /// host:port it listens on.
    pub addr: SocketAddr,
    replies: Arc<Mutex<Vec<WorkerMessage>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCoordinator {
    /// Serves `script` on 127.0.0.1, a free port, on its own thread.
    pub fn start(script: Script) -> FakeCoordinator {
        let replies = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            script,
            replies: replies.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let serving = tonic::transport::Server::builder()
                    .add_service(ClusterServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    });
                // A worker holding its stream open must not keep the test waiting.
                let _ = tokio::time::timeout(Duration::from_secs(120), serving).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        FakeCoordinator {
            addr,
            replies,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// What the worker answered, in order.
    pub fn replies(&self) -> Vec<WorkerMessage> {
        self.replies.lock().unwrap().clone()
    }

    /// The error messages the worker answered tasks with.
    pub fn worker_errors(&self) -> Vec<String> {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match &m.body {
                Some(worker_message::Body::Error(e)) => Some(e.message.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
