//! Collecting a step's gradients: the coordinator's hot path between the workers' results and
//! the optimizer.

use std::time::Instant;

use super::ClusterError;
use super::aggregation::Aggregation;
use super::engine::ClusterEngine;
use super::proto::worker_message;
use crate::train::{Contribution, GradientSum};

impl ClusterEngine {
    pub(super) fn bad_gradient(&self, w: usize, task: u64, why: String) -> ClusterError {
        let link = &self.workers[w];
        tracing::error!(rank = link.rank, peer = %link.peer, task, %why, "refused a gradient");
        ClusterError::BadGradient {
            rank: link.rank,
            peer: link.peer.clone(),
            task,
            why,
        }
    }

    /// Receives every shard's result of one step, checks each gradient and sums them in one
    /// pass (straight from shared memory or the message bytes).
    pub(super) fn collect_gradients(
        &mut self,
        ids: &[Option<u64>],
        batch: usize,
        sent: Instant,
    ) -> Result<Contribution, ClusterError> {
        let n = self.spec.num_params();
        // NCCL replicas reduce among themselves: there is nothing to sum here.
        let nccl = self.settings.aggregation == Aggregation::Nccl;
        let mut sum = GradientSum::new(if nccl { 0 } else { n });
        let (mut loss_sum, mut correct, mut pairs) = (0.0, 0usize, 0usize);
        let mut arrivals = Vec::with_capacity(ids.len());
        for (w, id) in ids.iter().enumerate() {
            let Some(id) = *id else { continue };
            let (at, body) = self.receive(w, id)?;
            let r = match body {
                worker_message::Body::Gradient(r) if r.id == id => r,
                _ => {
                    let peer = self.workers[w].peer.clone();
                    return Err(ClusterError::Protocol {
                        peer,
                        what: format!("expected the gradient of task {id}"),
                    });
                }
            };
            let added = if nccl {
                Ok(())
            } else if r.in_shm {
                let slot = match (&self.shm, self.workers[w].shm) {
                    (Some(region), true) => region.gradient(self.workers[w].rank as usize),
                    _ => None,
                };
                let Some(g) = slot else {
                    let why = "it says its gradient is in shared memory, but it has none".into();
                    return Err(self.bad_gradient(w, id, why));
                };
                sum.add(g)
            } else {
                if r.grad.len() % 4 != 0 {
                    let why = "its byte length is not a multiple of 4".into();
                    return Err(self.bad_gradient(w, id, why));
                }
                if r.grad.len() != n * 4 {
                    let why = format!("it has {} values, the model has {n}", r.grad.len() / 4);
                    return Err(self.bad_gradient(w, id, why));
                }
                sum.add_le_bytes(&r.grad)
            };
            if let Err((i, v)) = added {
                return Err(self.bad_gradient(w, id, format!("value {i} is {v}")));
            }
            loss_sum += r.loss_sum;
            correct += r.correct as usize;
            pairs += r.pairs as usize;
            arrivals.push((w, at, r.compute_s));
        }
        if pairs != batch {
            return Err(ClusterError::Protocol {
                peer: "the workers".into(),
                what: format!("gradients cover {pairs} pairs, the batch has {batch}"),
            });
        }
        self.clock.arrivals(sent, &arrivals);
        Ok(Contribution {
            grad: sum.mean(batch),
            loss_sum,
            correct,
            pairs,
        })
    }
}
