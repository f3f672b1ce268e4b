//! A worker of an NCCL run that speaks the real protocol over gRPC but has no GPU: it goes
//! through the rendezvous with an opaque id, answers tasks with made-up figures, and reports
//! a weights digest, so CPU tests can check the coordinator's side of NCCL runs.

use std::path::Path;

use siamese_common::aggregation::weights_digest;
use siamese_common::cluster::protocol::proto::{
    DigestResult, EmbedResult, GradientResult, NcclId, NcclReady, StateResult, WorkerMessage,
    coordinator_message, task, worker_message,
};
use siamese_common::cluster::protocol::wire::encode_f32;

/// How the fake NCCL worker behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    /// Everything as a healthy replica would.
    Healthy,
    /// Joins and receives the id but never reports its communicator.
    NeverReady,
    /// Reports a different weights digest once it has taken this many steps.
    DivergeAt(u64),
    /// Drops its connection instead of answering its gradient task after this many steps
    /// (a rank that died).
    VanishAfter(u64),
}

/// What the fake saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Its rank.
    pub rank: u32,
    /// The NCCL id the coordinator relayed to it.
    pub relayed_id: Vec<u8>,
    /// The weights version of the state the coordinator gave it, when it did.
    pub state_version: Option<u64>,
    /// The id it sent (rank 0 only).
    pub sent_id: Vec<u8>,
    /// The weights version it is at: the state it was given plus the gradient steps it took.
    pub steps: u64,
    /// Whether the coordinator said Stop.
    pub stopped: bool,
}

/// Joins `addr` as a worker of an NCCL run and plays `behaviour` until the session ends.
pub async fn run(addr: &str, token: &str, data: &Path, behaviour: Behaviour) -> Seen {
    let super::fake_session::FakeSession {
        mut inbound,
        tx,
        spec,
    } = super::fake_session::open(addr, token, data, "cuda:0", "fake-gpu").await;
    let send = |body| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(WorkerMessage { body: Some(body) }).await;
        }
    };
    let mut seen = Seen::default();
    while let Ok(Some(msg)) = inbound.message().await {
        match msg.body {
            Some(coordinator_message::Body::Welcome(w)) => {
                assert_eq!(w.aggregation, "nccl");
                seen.rank = w.rank;
                if w.rank == 0 {
                    // Unique per session, as NCCL's own ids are.
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    seen.sent_id = format!("fake-nccl-id-{nanos}").into_bytes();
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
            Some(coordinator_message::Body::State(s)) => {
                seen.steps = s.version;
                seen.state_version = Some(s.version);
            }
            Some(coordinator_message::Body::Task(t)) => {
                let id = t.id;
                let body = match t.kind {
                    Some(task::Kind::Gradient(_)) if matches!(behaviour, Behaviour::VanishAfter(k) if seen.steps >= k) =>
                    {
                        return seen;
                    }
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
                        // The replica never changes its weights: it reports (and, when
                        // asked, sends) the initial ones.
                        let digest = match diverged {
                            true => "diverged".to_string(),
                            false => weights_digest(&spec.init(1)),
                        };
                        worker_message::Body::Digest(DigestResult {
                            id,
                            digest,
                            steps: seen.steps,
                        })
                    }
                    Some(task::Kind::State(_)) => {
                        let zeros = vec![0.0; spec.num_params()];
                        worker_message::Body::State(StateResult {
                            id,
                            params: encode_f32(&spec.init(1)),
                            adam_m: encode_f32(&zeros),
                            adam_v: encode_f32(&zeros),
                            steps: seen.steps,
                        })
                    }
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
