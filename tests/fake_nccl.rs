//! A worker of an NCCL run that speaks the real protocol over gRPC but has no GPU: it goes
//! through the rendezvous with an opaque id, answers tasks with made-up figures, and reports
//! a weights digest, so CPU tests can check the coordinator's side of NCCL runs.

use std::path::Path;

use siamese_common::cluster::auth::AddToken;
use siamese_common::cluster::proto::cluster_client::ClusterClient;
use siamese_common::cluster::proto::{
    DigestResult, EmbedResult, GradientResult, Join, NcclId, NcclReady, RunRequest, WeightsResult,
    WorkerMessage, coordinator_message, task, worker_message,
};
use siamese_common::cluster::wire::encode_f32;
use siamese_common::cluster::{MODEL_VERSION, PROTOCOL_VERSION};
use siamese_common::data::{DatasetKind, load_dataset};
use siamese_common::model::ModelSpec;
use tokio_stream::wrappers::ReceiverStream;

/// How the fake NCCL worker behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    /// Everything as a healthy replica would.
    Healthy,
    /// Joins and receives the id but never reports its communicator.
    NeverReady,
    /// Reports a different weights digest once it has taken this many steps.
    DivergeAt(u64),
}

/// What the fake saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Its rank.
    pub rank: u32,
    /// The NCCL id the coordinator relayed to it.
    pub relayed_id: Vec<u8>,
    /// The id it sent (rank 0 only).
    pub sent_id: Vec<u8>,
    /// Gradient steps it answered.
    pub steps: u64,
    /// Whether the coordinator said Stop.
    pub stopped: bool,
}

/// Joins `addr` as a worker of an NCCL run and plays `behaviour` until the session ends.
pub async fn run(addr: &str, token: &str, data: &Path, behaviour: Behaviour) -> Seen {
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
    let send = |body| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(WorkerMessage { body: Some(body) }).await;
        }
    };
    send(worker_message::Body::Join(Join {
        protocol_version: PROTOCOL_VERSION,
        model_version: MODEL_VERSION.into(),
        dataset: kind.name().into(),
        data_digest: dataset.digest(),
        device: "cuda:0".into(),
        threads: 1,
        host: "fake-gpu".into(),
        pid: std::process::id(),
        rank: None,
        shm_nonce: None,
    }))
    .await;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    while let Ok(Some(msg)) = inbound.message().await {
        match msg.body {
            Some(coordinator_message::Body::Welcome(w)) => {
                assert_eq!(w.aggregation, "nccl");
                seen.rank = w.rank;
                if w.rank == 0 {
                    seen.sent_id = format!("fake-nccl-id-{}", std::process::id()).into_bytes();
                    send(worker_message::Body::NcclId(NcclId {
                        id: seen.sent_id.clone().into(),
                    }))
                    .await;
                }
            }
            Some(coordinator_message::Body::NcclId(n)) => {
                seen.relayed_id = n.id.to_vec();
                if behaviour != Behaviour::NeverReady {
                    send(worker_message::Body::NcclReady(NcclReady {
                        rank: seen.rank,
                    }))
                    .await;
                }
            }
            Some(coordinator_message::Body::Task(t)) => {
                let id = t.id;
                let body = match t.kind {
                    Some(task::Kind::Gradient(g)) => {
                        seen.steps += 1;
                        worker_message::Body::Gradient(GradientResult {
                            id,
                            pairs: g.first.len() as u32,
                            loss_sum: 0.1 * g.first.len() as f64,
                            ..GradientResult::default()
                        })
                    }
                    Some(task::Kind::Digest(_)) => {
                        let diverged =
                            matches!(behaviour, Behaviour::DivergeAt(k) if seen.steps >= k);
                        let digest = if diverged { "diverged" } else { "agreed" };
                        worker_message::Body::Digest(DigestResult {
                            id,
                            digest: digest.into(),
                            steps: seen.steps,
                        })
                    }
                    Some(task::Kind::Weights(_)) => worker_message::Body::Weights(WeightsResult {
                        id,
                        values: encode_f32(&spec.init(1)),
                    }),
                    Some(task::Kind::Embed(e)) => worker_message::Body::Embedding(EmbedResult {
                        id,
                        width: 10,
                        values: encode_f32(&vec![0.0; e.indices.len() * 10]),
                        compute_s: 0.0,
                    }),
                    None => continue,
                };
                send(body).await;
            }
            Some(coordinator_message::Body::Stop(_)) => {
                seen.stopped = true;
                break;
            }
            _ => {}
        }
    }
    seen
}
