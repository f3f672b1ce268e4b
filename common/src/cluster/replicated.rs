//! The coordinator's side of runs whose replicas step Adam themselves (allreduce, nccl): the
//! NCCL rendezvous, the reduced gradient for allreduce, and the replica-digest check.

use super::ClusterError;
use super::aggregation::Aggregation;
use super::engine::ClusterEngine;
use super::proto::{
    DigestTask, NcclId, ReducedGradient, WeightsTask, coordinator_message, task, worker_message,
};
use super::shm::REDUCED;
use super::wire::{decode_f32, encode_f32};
use crate::train::Contribution;

impl ClusterEngine {
    /// Relays rank 0's NCCL unique id to every rank and waits until every communicator is up,
    /// within the NCCL timeout: a rank that never forms its communicator stops the run with an
    /// error naming it instead of leaving the others blocked in NCCL's init.
    pub(super) fn rendezvous(&mut self) -> Result<(), ClusterError> {
        let limit = self.settings.nccl_timeout;
        let id = match self.receive_within(0, limit, "send the NCCL unique id")? {
            (_, worker_message::Body::NcclId(n)) if !n.id.is_empty() => n.id,
            _ => {
                return Err(ClusterError::Protocol {
                    peer: self.workers[0].peer.clone(),
                    what: "rank 0 did not start with the NCCL unique id".into(),
                });
            }
        };
        for w in 0..self.world() {
            self.send(
                w,
                coordinator_message::Body::NcclId(NcclId { id: id.clone() }),
            )?;
        }
        for w in 0..self.world() {
            match self.receive_within(w, limit, "form its NCCL communicator")? {
                (_, worker_message::Body::NcclReady(r)) if r.rank == self.workers[w].rank => {}
                _ => {
                    return Err(ClusterError::Protocol {
                        peer: self.workers[w].peer.clone(),
                        what: "expected NcclReady with its rank".into(),
                    });
                }
            }
        }
        tracing::info!(
            world = self.world(),
            "NCCL communicator formed on every rank"
        );
        Ok(())
    }

    /// After a replicated step's results are in: sends allreduce replicas the mean gradient,
    /// counts the step, and compares the replicas every `digest_every` steps.
    pub(super) fn finish_replicated_step(
        &mut self,
        ids: &[Option<u64>],
        c: &Contribution,
    ) -> Result<(), ClusterError> {
        if self.settings.aggregation == Aggregation::Allreduce {
            let mut encoded = None;
            let shm_version = REDUCED | (self.replica_steps + 1);
            if self.workers.iter().any(|w| w.shm)
                && let Some(region) = &mut self.shm
            {
                region.write_weights(shm_version, &c.grad);
            }
            for (w, id) in ids.iter().enumerate() {
                let Some(task_id) = *id else { continue };
                let in_shm = self.workers[w].shm;
                let values = match in_shm {
                    true => Default::default(),
                    false => encoded.get_or_insert_with(|| encode_f32(&c.grad)).clone(),
                };
                let body = coordinator_message::Body::Reduced(ReducedGradient {
                    task_id,
                    values,
                    in_shm,
                    shm_version,
                });
                self.send(w, body)?;
            }
        }
        self.version += 1;
        self.replica_steps += 1;
        if self
            .replica_steps
            .is_multiple_of(self.settings.digest_every.max(1))
        {
            self.check_digests()?;
        }
        Ok(())
    }

    /// Asks every replica for the md5 of its weights and step count; any difference stops the
    /// run with the ranks that disagree.
    pub(super) fn check_digests(&mut self) -> Result<(), ClusterError> {
        let mut ids = Vec::with_capacity(self.world());
        for w in 0..self.world() {
            ids.push(self.task(w, self.version, task::Kind::Digest(DigestTask {}))?);
        }
        let mut digests = Vec::with_capacity(ids.len());
        for (w, id) in ids.into_iter().enumerate() {
            match self.receive(w, id)? {
                (_, worker_message::Body::Digest(d)) if d.id == id => digests.push(d),
                _ => {
                    return Err(ClusterError::Protocol {
                        peer: self.workers[w].peer.clone(),
                        what: format!("expected the weights digest of task {id}"),
                    });
                }
            }
        }
        let steps = self.replica_steps;
        let mut detail = Vec::new();
        for (w, d) in digests.iter().enumerate() {
            let rank = self.workers[w].rank;
            if d.steps != steps {
                detail.push(format!("rank {rank} applied {} steps", d.steps));
            } else if d.digest != digests[0].digest {
                detail.push(format!(
                    "rank {rank} has weights md5 {}, rank {} has {}",
                    d.digest, self.workers[0].rank, digests[0].digest
                ));
            }
        }
        if !detail.is_empty() {
            return Err(ClusterError::Diverged {
                steps,
                detail: detail.join("; "),
            });
        }
        tracing::debug!(steps, digest = %digests[0].digest, "replicas agree");
        Ok(())
    }

    /// The replicas' weights, after checking they all agree (taken from the lowest rank).
    pub(super) fn replica_weights(&mut self) -> Result<Vec<f32>, ClusterError> {
        self.check_digests()?;
        let id = self.task(0, self.version, task::Kind::Weights(WeightsTask {}))?;
        let peer = self.workers[0].peer.clone();
        let values = match self.receive(0, id)? {
            (_, worker_message::Body::Weights(r)) if r.id == id => decode_f32(&r.values),
            _ => None,
        };
        match values {
            Some(v) if v.len() == self.spec.num_params() => Ok(v),
            _ => Err(ClusterError::Protocol {
                peer,
                what: format!("expected {} weights for task {id}", self.spec.num_params()),
            }),
        }
    }
}
