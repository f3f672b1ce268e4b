//! The coordinator's side of training: shards each global batch across the admitted workers,
//! collects and sums their gradients, and either hands the mean to the trainer (whose one Adam
//! steps and whose weights it broadcasts: `coordinator`), or sends the mean back to replicas
//! that step Adam themselves (`allreduce`; with `nccl` they reduce among themselves). Why both:
//! `docs/architecture.md`.

use std::ops::Range;
use std::time::Instant;

use super::links::Links;
use super::replica_check::{check_digests, replica_weights};
use super::settings::EngineSettings;
use super::step_clock::StepClock;
use crate::aggregation::{Aggregation, GradientSum};
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    EmbedTask, GradientTask, ImageSet, ReducedGradient, Weights, coordinator_message, task,
    worker_message,
};
use crate::cluster::protocol::shm::{REDUCED, SharedRegion};
use crate::cluster::protocol::wire::{decode_f32, encode_f32};
use crate::model::ModelSpec;
use crate::pairs::{Pair, shard_ranges};
use crate::results::{StepTiming, WorkerTiming};
use crate::train::{Contribution, Engine, EngineInfo, ImageSplit, TrainError};

/// Tasks sent ahead for the next batch.
struct Prefetched {
    first: Pair,
    len: usize,
    ids: Vec<Option<u64>>,
}

/// Drives the admitted workers through the training steps and evaluation.
pub struct ClusterEngine {
    links: Links,
    spec: ModelSpec,
    /// Weights version: sets of weights sent, plus (replicated runs) steps the replicas applied.
    version: u64,
    settings: EngineSettings,
    prefetched: Option<Prefetched>,
    clock: StepClock,
    /// The shared file of the workers on this host, when any of them mapped it.
    shm: Option<SharedRegion>,
    /// Optimizer steps the replicas applied (replicated runs).
    replica_steps: u64,
}

impl ClusterEngine {
    /// An engine over the admitted workers; `shm` is the shared file offered to the ones on
    /// this host.
    pub fn new(
        links: Links,
        spec: ModelSpec,
        settings: EngineSettings,
        shm: Option<SharedRegion>,
    ) -> Self {
        // Every worker that will map the file has mapped it by now.
        let shm = shm
            .filter(|_| links.iter().any(|w| w.shm))
            .map(|mut region| {
                region.unlink();
                region
            });
        tracing::info!(
            shared_memory = links.iter().filter(|w| w.shm).count(),
            grpc = links.iter().filter(|w| !w.shm).count(),
            "weights and gradients transport"
        );
        let timing = links
            .iter()
            .map(|w| WorkerTiming {
                rank: w.rank,
                peer: w.peer.clone(),
                ..WorkerTiming::default()
            })
            .collect();
        ClusterEngine {
            links,
            spec,
            version: 0,
            settings,
            prefetched: None,
            clock: StepClock::new(timing),
            shm,
            replica_steps: 0,
        }
    }

    /// Number of workers.
    pub fn world(&self) -> usize {
        self.links.len()
    }

    /// Tells every worker to stop, and logs the coordinator's own share of aggregation.
    pub fn stop(&mut self, reason: &str) {
        self.clock.log_overhead();
        self.links.stop_all(reason);
    }

    fn send_gradient_tasks(
        &mut self,
        batch: &[Pair],
        version: u64,
    ) -> Result<Vec<Option<u64>>, ClusterError> {
        let ranges: Vec<Range<usize>> = shard_ranges(batch.len(), self.world());
        let replicated = self.settings.aggregation.replicated();
        let mut ids = Vec::with_capacity(ranges.len());
        for (w, r) in ranges.into_iter().enumerate() {
            // Replicas that step Adam themselves must all take part in every step.
            if r.is_empty() && !replicated {
                ids.push(None);
                continue;
            }
            let shard = &batch[r];
            let kind = task::Kind::Gradient(GradientTask {
                first: shard.iter().map(|p| p.a).collect(),
                second: shard.iter().map(|p| p.b).collect(),
                same: shard.iter().map(|p| p.same).collect(),
                global_pairs: if replicated { batch.len() as u32 } else { 0 },
            });
            ids.push(Some(self.links.task(w, version, kind)?));
        }
        Ok(ids)
    }

    fn bad_gradient(&self, w: usize, task: u64, why: String) -> ClusterError {
        let link = self.links.link(w);
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
    fn collect_gradients(
        &mut self,
        ids: &[Option<u64>],
        batch: usize,
        sent: Instant,
    ) -> Result<Contribution, ClusterError> {
        // NCCL replicas reduce among themselves: there is nothing to sum here.
        let nccl = self.settings.aggregation == Aggregation::Nccl;
        let mut sum = GradientSum::new(if nccl { 0 } else { self.spec.num_params() });
        let (mut loss_sum, mut correct, mut pairs) = (0.0, 0usize, 0usize);
        let mut arrivals = Vec::with_capacity(ids.len());
        for (w, id) in ids.iter().enumerate() {
            let Some(id) = *id else { continue };
            let (at, body) = self.links.receive(w, id)?;
            let r = match body {
                worker_message::Body::Gradient(r) if r.id == id => r,
                _ => {
                    let what = format!("expected the gradient of task {id}");
                    return Err(self.links.protocol_error(w, what));
                }
            };
            let added = if nccl {
                Ok(())
            } else if r.in_shm {
                let link = self.links.link(w);
                let slot = match (&self.shm, link.shm) {
                    (Some(region), true) => region.gradient(link.rank as usize),
                    _ => None,
                };
                let Some(g) = slot else {
                    let why = "it says its gradient is in shared memory, but it has none".into();
                    return Err(self.bad_gradient(w, id, why));
                };
                sum.add(g)
            } else {
                sum.add_le_bytes(&r.grad)
            };
            if let Err(e) = added {
                return Err(self.bad_gradient(w, id, e.to_string()));
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

    /// After a replicated step's results are in: sends allreduce replicas the mean gradient,
    /// counts the step, and compares the replicas every `digest_every` steps.
    fn finish_replicated_step(
        &mut self,
        ids: &[Option<u64>],
        c: &Contribution,
    ) -> Result<(), ClusterError> {
        if self.settings.aggregation == Aggregation::Allreduce {
            let mut encoded = None;
            let shm_version = REDUCED | (self.replica_steps + 1);
            if self.links.iter().any(|w| w.shm)
                && let Some(region) = &mut self.shm
            {
                region.write_weights(shm_version, &c.grad);
            }
            for (w, id) in ids.iter().enumerate() {
                let Some(task_id) = *id else { continue };
                let in_shm = self.links.link(w).shm;
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
                self.links.send(w, body)?;
            }
        }
        self.version += 1;
        self.replica_steps += 1;
        if self
            .replica_steps
            .is_multiple_of(self.settings.digest_every.max(1))
        {
            check_digests(&mut self.links, self.version, self.replica_steps)?;
        }
        Ok(())
    }

    /// Subnet outputs of `indices`, sharded across the workers and put back in order.
    fn embed_sharded(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
    ) -> Result<Vec<f32>, ClusterError> {
        let set = match split {
            ImageSplit::Train => ImageSet::Train,
            ImageSplit::Test => ImageSet::Test,
        };
        let ranges = shard_ranges(indices.len(), self.world());
        let mut ids = Vec::with_capacity(ranges.len());
        for (w, r) in ranges.iter().enumerate() {
            let kind = task::Kind::Embed(EmbedTask {
                set: set as i32,
                indices: indices[r.clone()].to_vec(),
            });
            ids.push(self.links.task(w, self.version, kind)?);
        }
        let width = self.spec.out_width();
        let mut out = Vec::with_capacity(indices.len() * width);
        for (w, (id, r)) in ids.into_iter().zip(ranges).enumerate() {
            let values = match self.links.receive(w, id)? {
                (_, worker_message::Body::Embedding(e)) if e.id == id => decode_f32(&e.values),
                _ => {
                    let what = format!("expected the embeddings of task {id}");
                    return Err(self.links.protocol_error(w, what));
                }
            };
            match values {
                Some(v) if v.len() == r.len() * width => out.extend(v),
                _ => {
                    let what = format!(
                        "embeddings of task {id} do not hold {} x {width} values",
                        r.len()
                    );
                    return Err(self.links.protocol_error(w, what));
                }
            }
        }
        Ok(out)
    }
}

impl Engine for ClusterEngine {
    fn info(&self) -> EngineInfo {
        let device = self
            .links
            .iter()
            .next()
            .map_or_else(|| "cpu".into(), |w| w.join.device.clone());
        EngineInfo {
            workers: self.world(),
            device,
            aggregation: self.settings.aggregation.name().into(),
        }
    }

    fn replicas_step(&self) -> bool {
        self.settings.aggregation.replicated()
    }

    fn pull_weights(&mut self) -> Result<Vec<f32>, TrainError> {
        let (version, steps) = (self.version, self.replica_steps);
        Ok(replica_weights(
            &mut self.links,
            version,
            steps,
            self.spec.num_params(),
        )?)
    }

    fn set_weights(&mut self, weights: &[f32]) -> Result<(), TrainError> {
        let start = self.clock.weights_start();
        self.spec.check_len(weights, "weights")?;
        self.version += 1;
        if let Some(region) = &mut self.shm {
            region.write_weights(self.version, weights);
        }
        let mut encoded = None;
        for w in 0..self.world() {
            let in_shm = self.links.link(w).shm;
            let values = match in_shm {
                true => Default::default(),
                false => encoded.get_or_insert_with(|| encode_f32(weights)).clone(),
            };
            let body = coordinator_message::Body::Weights(Weights {
                version: self.version,
                values,
                in_shm,
            });
            self.links.send(w, body)?;
        }
        self.clock.weights_queued(start);
        Ok(())
    }

    fn gradient(&mut self, batch: &[Pair]) -> Result<Contribution, TrainError> {
        // A prefetched shard waited for the weights; a fresh one starts now.
        let (ids, sent) = match self.prefetched.take() {
            Some(p) if p.len == batch.len() && batch.first() == Some(&p.first) => {
                (p.ids, self.clock.weights_sent())
            }
            _ => {
                let now = Instant::now();
                (self.send_gradient_tasks(batch, self.version)?, now)
            }
        };
        let contribution = self.collect_gradients(&ids, batch.len(), sent)?;
        self.clock.handed_over();
        if self.settings.aggregation.replicated() {
            // The reduced gradient plays the part of the weights: the replicas start on it.
            let start = self.clock.weights_start();
            self.finish_replicated_step(&ids, &contribution)?;
            self.clock.weights_queued(start);
        }
        Ok(contribution)
    }

    fn prefetch(&mut self, next: &[Pair]) -> Result<(), TrainError> {
        let Some(&first) = next.first() else {
            return Ok(());
        };
        // Replicas that step themselves reach the next version on their own.
        let version = match self.settings.aggregation.replicated() {
            true => self.version,
            false => self.version + 1,
        };
        let ids = self.send_gradient_tasks(next, version)?;
        self.prefetched = Some(Prefetched {
            first,
            len: next.len(),
            ids,
        });
        Ok(())
    }

    fn embed(&mut self, split: ImageSplit, indices: &[u32]) -> Result<Vec<f32>, TrainError> {
        Ok(self.embed_sharded(split, indices)?)
    }

    fn timing(&self) -> StepTiming {
        self.clock.timing()
    }
}
