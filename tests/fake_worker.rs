//! A misbehaving worker speaking the real protocol, for testing what the coordinator refuses.

use std::path::Path;
use std::time::Duration;

use siamese_common::cluster::auth::AddToken;
use siamese_common::cluster::proto::cluster_client::ClusterClient;
use siamese_common::cluster::proto::{
    GradientResult, Join, RunRequest, WorkerMessage, coordinator_message, task, worker_message,
};
use siamese_common::cluster::wire::encode_f32;
use siamese_common::cluster::{MODEL_VERSION, PROTOCOL_VERSION};
use siamese_common::data::{DatasetKind, load_dataset};
use siamese_common::model::ModelSpec;
use tokio_stream::wrappers::ReceiverStream;

/// How the fake worker misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Every gradient holds a NaN.
    NanGradient,
    /// Every gradient is one value short.
    ShortGradient,
    /// Answers this many tasks, then drops its connection.
    VanishAfter(usize),
    /// Says its gradient is in shared memory it never mapped.
    ClaimsSharedMemory,
}

/// Joins `addr` with real data and misbehaves as told; returns when the session ends.
pub async fn run(addr: &str, token: &str, data: &Path, fault: Fault) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ClusterClient::with_interceptor(channel, AddToken::new(Some(token)).unwrap());
    let info = client.run(RunRequest {}).await.unwrap().into_inner();
    let kind: DatasetKind = info.dataset.parse().unwrap();
    let dataset = load_dataset(kind, data).unwrap();
    let spec = ModelSpec::siamese(kind, 10);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let join = Join {
        protocol_version: PROTOCOL_VERSION,
        model_version: MODEL_VERSION.into(),
        dataset: kind.name().into(),
        data_digest: dataset.digest(),
        device: "cpu".into(),
        threads: 1,
        host: "fake".into(),
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
    let mut answered = 0;
    while let Ok(Some(msg)) = inbound.message().await {
        let Some(coordinator_message::Body::Task(t)) = msg.body else {
            continue;
        };
        let Some(task::Kind::Gradient(g)) = t.kind else {
            continue;
        };
        if matches!(fault, Fault::VanishAfter(n) if answered == n) {
            return;
        }
        let mut grad = vec![0.01f32; spec.num_params()];
        match fault {
            Fault::NanGradient => grad[7] = f32::NAN,
            Fault::ShortGradient => {
                grad.pop();
            }
            Fault::VanishAfter(_) | Fault::ClaimsSharedMemory => {}
        }
        let reply = GradientResult {
            id: t.id,
            grad: encode_f32(&grad),
            loss_sum: 0.1,
            correct: 0,
            pairs: g.first.len() as u32,
            compute_s: 0.001,
            in_shm: matches!(fault, Fault::ClaimsSharedMemory),
        };
        if tx
            .send(WorkerMessage {
                body: Some(worker_message::Body::Gradient(reply)),
            })
            .await
            .is_err()
        {
            return;
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
