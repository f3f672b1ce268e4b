//! The opening every fake worker shares: connect with the token, ask for the run, load the
//! real dataset it names, open a session with a Join, and answer the data challenge.

use std::path::Path;

use siamese_common::cluster::protocol::auth::AddToken;
use siamese_common::cluster::protocol::proto::cluster_client::ClusterClient;
use siamese_common::cluster::protocol::proto::{
    CoordinatorMessage, Join, Proof, RunRequest, WorkerMessage, coordinator_message, worker_message,
};
use siamese_common::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};
use siamese_common::data::{DatasetKind, load_dataset};
use siamese_common::model::ModelSpec;
use tokio::sync::mpsc::Sender;
use tokio_stream::wrappers::ReceiverStream;

/// An open session of a fake worker.
pub struct FakeSession {
    /// Messages from the coordinator.
    pub inbound: tonic::Streaming<CoordinatorMessage>,
    /// Messages to it.
    pub tx: Sender<WorkerMessage>,
    /// The run's model layout.
    pub spec: ModelSpec,
}

/// Joins the coordinator at `addr` as a worker on `device`, naming itself `host`.
pub async fn open(addr: &str, token: &str, data: &Path, device: &str, host: &str) -> FakeSession {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ClusterClient::with_interceptor(channel, AddToken::new(Some(token)).unwrap());
    let info = client.run(RunRequest {}).await.unwrap().into_inner();
    let kind: DatasetKind = info.dataset.parse().unwrap();
    let dataset = load_dataset(kind, data).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let join = Join {
        protocol_version: PROTOCOL_VERSION,
        model_version: MODEL_VERSION.into(),
        dataset: kind.name().into(),
        device: device.into(),
        threads: 1,
        host: host.into(),
        pid: std::process::id(),
        rank: None,
        shm_nonce: None,
    };
    tx.send(WorkerMessage {
        body: Some(worker_message::Body::Join(join)),
    })
    .await
    .unwrap();
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Prove the data, as a real worker does; a refusal (a full run, say) ends the session.
    if let Some(coordinator_message::Body::Challenge(c)) =
        inbound.message().await.ok().flatten().and_then(|m| m.body)
    {
        let proof = dataset.proof(&c.nonce);
        tx.send(WorkerMessage {
            body: Some(worker_message::Body::Proof(Proof { proof })),
        })
        .await
        .unwrap();
    }
    FakeSession {
        inbound,
        tx,
        spec: ModelSpec::siamese(kind, 10),
    }
}
