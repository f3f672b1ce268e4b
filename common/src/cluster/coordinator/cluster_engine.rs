//! The coordinator's side of training. Each global batch is cut into the fixed micro-batches of
//! the summation tree; the canonical blocks of each worker's share go out as tasks; the blocks'
//! gradients come back, are checked, and are added by the same tree the workers used, so the
//! mean does not depend on how many workers there are or which of them computed what. A worker
//! lost mid-step has its blocks recomputed by the others; one that joins gets the run's state
//! and takes blocks from the next step. Then the trainer's Adam steps on the mean: here, with
//! the weights broadcast (`coordinator`), or also on every replica, which gets the mean
//! (`allreduce`). NCCL replicas (`nccl`) reduce and step among themselves. Why both:
//! `docs/architecture.md`.

use prost::bytes::Bytes;
use std::ops::Range;

use super::answer_checks::{checked_embeddings, checked_vector, figures_problem};
use super::nccl_rendezvous::rendezvous;
use super::pool::{Batch, Done, Job, Member, WorkerPool};
use super::replica_check::{check_digests, pull_state};
use super::settings::EngineSettings;
use super::step_clock::{Arrival, StepClock};
use crate::aggregation::tree::{MicroBatches, combine};
use crate::aggregation::{Aggregation, OptimizerState, mean_of_sum};
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    EmbedTask, GradientResult, GradientTask, ImageSet, ReducedGradient, ReplicaState, Weights,
    coordinator_message, task, worker_message,
};
use crate::cluster::protocol::shm::{REDUCED, SharedRegion};
use crate::cluster::protocol::transport::EMBED_TASK_IMAGES;
use crate::cluster::protocol::wire::{decode_f32, encode_f32};
use crate::data::TestAugment;
use crate::model::ModelSpec;
use crate::pairs::{Pair, shard_ranges};
use crate::results::{MembershipEvent, StepTiming};
use crate::train::{Contribution, Engine, EngineInfo, ImageSplit, TrainError};

/// Tasks sent ahead for the next batch.
struct Prefetched {
    first: Pair,
    len: usize,
    batch: Batch,
    plan: StepPlan,
}

/// What a step's tasks cover.
#[derive(Clone)]
enum StepPlan {
    /// Tree blocks (leaf ranges) of a batch of `pairs` pairs cut into `leaves` micro-batches;
    /// `None` for an empty task that only keeps an idle allreduce replica in step.
    Blocks {
        pairs: usize,
        leaves: usize,
        blocks: Vec<Option<Range<usize>>>,
    },
    /// One shard per rank (NCCL), with its pair count.
    Shards(Vec<usize>),
}

/// Drives the workers through the training steps and evaluation.
pub struct ClusterEngine {
    pool: WorkerPool,
    spec: ModelSpec,
    settings: EngineSettings,
    /// Workers the run asks for.
    world: usize,
    /// Pairs per micro-batch of the summation tree.
    micro_batch: usize,
    /// Optimizer steps applied: the weights version every ready replica is at.
    version: u64,
    /// Whether the first workers were admitted and given the state.
    started: bool,
    /// The batch after the one being computed, announced by the trainer: its tasks ride with
    /// the current step's mean or weights.
    upcoming: Option<Vec<Pair>>,
    prefetched: Option<Prefetched>,
    clock: StepClock,
    /// The shared file of the workers on this host (removed when the engine goes).
    shm: Option<SharedRegion>,
}

/// The messages that bring a worker to `state`: its weights, plus Adam's moments for replicas
/// that step Adam themselves.
fn sync_messages(
    aggregation: Aggregation,
    state: &OptimizerState,
) -> impl Fn(&Member) -> Vec<coordinator_message::Body> + '_ {
    move |_| {
        let version = state.steps();
        vec![match aggregation {
            Aggregation::CentralAdam => coordinator_message::Body::Weights(Weights {
                version,
                values: encode_f32(&state.params),
                in_shm: false,
            }),
            Aggregation::Allreduce | Aggregation::Nccl => {
                coordinator_message::Body::State(ReplicaState {
                    version,
                    params: encode_f32(&state.params),
                    adam_m: encode_f32(&state.adam.m),
                    adam_v: encode_f32(&state.adam.v),
                    // A plain struct of numbers and enums always serialises.
                    adam_config_json: serde_json::to_string(&state.adam.config).unwrap_or_default(),
                })
            }
        }]
    }
}

impl ClusterEngine {
    /// An engine over `pool` for `world` workers, summing by micro-batches of `micro_batch`
    /// pairs; `shm` is the shared file offered to the workers on this host.
    pub fn new(
        mut pool: WorkerPool,
        spec: ModelSpec,
        settings: EngineSettings,
        (world, micro_batch): (usize, usize),
        shm: Option<SharedRegion>,
    ) -> Self {
        // An NCCL communicator is formed once: a worker joining mid-run waits for a regroup.
        pool.set_elastic(settings.aggregation != Aggregation::Nccl);
        ClusterEngine {
            pool,
            spec,
            settings,
            world,
            micro_batch: micro_batch.max(1),
            version: 0,
            started: false,
            upcoming: None,
            prefetched: None,
            clock: StepClock::new(),
            shm,
        }
    }

    /// Number of workers the run asks for.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Ends the run for the workers, and logs the coordinator's own share of aggregation. A
    /// finished or failed run tells them with Stop; an interrupted one (its checkpoint written)
    /// just ends their sessions, so that remote workers reconnect to the coordinator that
    /// resumes it.
    pub fn stop(&mut self, outcome: &Result<(), String>) {
        self.clock.log_overhead();
        match outcome {
            Ok(()) => self.pool.stop_all("training finished", false),
            Err(why) if why == "interrupted" => {}
            Err(why) => self.pool.stop_all(why, true),
        }
    }

    fn nccl(&self) -> bool {
        self.settings.aggregation == Aggregation::Nccl
    }

    /// The tasks of one batch: the canonical tree blocks of each ready worker's share of the
    /// micro-batches ([`MicroBatches::bounded_blocks`], so never a long task), or for NCCL one
    /// shard per rank.
    fn plan(&self, batch: &[Pair]) -> (Vec<Job>, Vec<usize>, StepPlan) {
        let ready = self.pool.ready().len().max(1);
        let version = self.version;
        if self.nccl() {
            let ranges = shard_ranges(batch.len(), ready);
            let jobs = ranges
                .iter()
                .map(|r| Job {
                    kind: gradient_kind(&batch[r.clone()], batch.len(), self.micro_batch, 0),
                    version,
                })
                .collect();
            let plan = StepPlan::Shards(ranges.iter().map(Range::len).collect());
            return (jobs, (0..ready).collect(), plan);
        }
        let micro = MicroBatches::or_whole(batch.len(), self.micro_batch);
        let leaves = micro.leaves();
        let allreduce = self.settings.aggregation == Aggregation::Allreduce;
        let (mut jobs, mut assign, mut all) = (Vec::new(), Vec::new(), Vec::new());
        for (w, share) in shard_ranges(leaves, ready).into_iter().enumerate() {
            // An allreduce replica must take part in every step even without a block: the
            // coordinator then cannot write the next step's mean into the shared file before
            // this replica has read the current one.
            if share.is_empty() && allreduce {
                jobs.push(Job {
                    kind: gradient_kind(&[], 0, self.micro_batch, leaves),
                    version,
                });
                assign.push(w);
                all.push(None);
            }
            for block in micro.bounded_blocks(share) {
                let pairs = &batch[micro.pair_range(block.clone())];
                jobs.push(Job {
                    kind: gradient_kind(pairs, 0, self.micro_batch, block.start),
                    version,
                });
                assign.push(w);
                all.push(Some(block));
            }
        }
        let plan = StepPlan::Blocks {
            pairs: batch.len(),
            leaves,
            blocks: all,
        };
        (jobs, assign, plan)
    }

    fn bad_gradient(&self, d: &Done, why: String) -> ClusterError {
        tracing::error!(rank = d.rank, peer = %d.peer, %why, "refused a gradient");
        ClusterError::BadGradient {
            rank: d.rank,
            peer: d.peer.clone(),
            task: answer_task(d),
            why,
        }
    }

    /// Checks a gradient answer's figures against its task: `pairs` pairs.
    fn check_figures(
        &self,
        d: &Done,
        r: &GradientResult,
        pairs: usize,
    ) -> Result<(), ClusterError> {
        let why = figures_problem(r, pairs);
        match why {
            Some(why) => Err(self.bad_gradient(d, why)),
            None => Ok(()),
        }
    }

    /// A checked gradient of one block, from the shared file or the message.
    fn block_gradient(&self, d: &Done, r: &GradientResult) -> Result<Vec<f32>, ClusterError> {
        let n = self.spec.num_params();
        let values = match (r.in_shm, d.slot, &self.shm) {
            (true, Some(slot), Some(region)) => region.gradient(slot as usize).map(<[f32]>::to_vec),
            (true, ..) => {
                let why = "it says its gradient is in shared memory, but it was given no slot";
                return Err(self.bad_gradient(d, why.into()));
            }
            (false, ..) => decode_f32(&r.grad),
        };
        checked_vector(values, n).map_err(|why| self.bad_gradient(d, why))
    }

    /// Collects a step's answers and combines them; the mean is `None` for NCCL.
    fn finish_step(
        &mut self,
        batch: Batch,
        plan: StepPlan,
        state: &OptimizerState,
    ) -> Result<Contribution, ClusterError> {
        let sync = sync_messages(self.settings.aggregation, state);
        let nccl = self.nccl();
        let done = self.pool.collect(batch, &sync, !nccl)?;
        let (mut loss_sum, mut correct, mut pairs) = (0.0, 0usize, 0usize);
        let mut arrivals = Vec::with_capacity(done.len());
        let mut parts: Vec<(Range<usize>, Vec<f32>)> = Vec::new();
        for (i, d) in done.iter().enumerate() {
            let r = match &d.body {
                worker_message::Body::Gradient(r) => r,
                _ => {
                    let what = format!("expected the gradient of task {}", answer_task(d));
                    return Err(ClusterError::Protocol {
                        peer: d.peer.clone(),
                        what,
                    });
                }
            };
            let expected = match &plan {
                StepPlan::Shards(sizes) => sizes[i],
                StepPlan::Blocks { pairs, blocks, .. } => {
                    let micro = MicroBatches::or_whole(*pairs, self.micro_batch);
                    blocks[i]
                        .as_ref()
                        .map_or(0, |b| micro.pair_range(b.clone()).len())
                }
            };
            self.check_figures(d, r, expected)?;
            if let StepPlan::Blocks { blocks, .. } = &plan
                && let Some(block) = &blocks[i]
            {
                parts.push((block.clone(), self.block_gradient(d, r)?));
            }
            loss_sum += r.loss_sum;
            correct += r.correct as usize;
            pairs += r.pairs as usize;
            arrivals.push(Arrival {
                session: d.session,
                rank: d.rank,
                peer: &d.peer,
                started: d.started,
                at: d.at,
                compute: r.compute_s,
            });
        }
        self.clock.arrivals(&arrivals);
        let grad = match &plan {
            StepPlan::Shards(_) => None,
            StepPlan::Blocks { pairs, leaves, .. } => {
                let root = combine(*leaves, parts).map_err(|e| ClusterError::Protocol {
                    peer: "the workers".into(),
                    what: e.to_string(),
                })?;
                Some(mean_of_sum(&root, *pairs))
            }
        };
        Ok(Contribution {
            grad,
            loss_sum,
            correct,
            pairs,
        })
    }

    /// Sends allreduce replicas a step's mean: once through the shared file for the workers on
    /// this host, in the message for the others.
    fn send_reduced(&mut self, mean: &[f32], version: u64) {
        self.broadcast_payload(REDUCED | version, mean, |values, in_shm| {
            coordinator_message::Body::Reduced(ReducedGradient {
                version,
                values,
                in_shm,
            })
        });
    }

    /// Sends `coordinator` replicas the stepped weights.
    fn send_weights(&mut self, state: &OptimizerState) {
        let version = state.steps();
        self.broadcast_payload(version, &state.params, |values, in_shm| {
            coordinator_message::Body::Weights(Weights {
                version,
                values,
                in_shm,
            })
        });
    }

    /// Sends every ready worker `values`: written once to the shared file (tagged `tag`) when a
    /// worker on this host maps it, encoded once for the message of every other worker.
    fn broadcast_payload(
        &mut self,
        tag: u64,
        values: &[f32],
        body: impl Fn(Bytes, bool) -> coordinator_message::Body,
    ) {
        let any_shm = self.pool.members().iter().any(|m| m.ready && m.shm);
        if any_shm && let Some(region) = &mut self.shm {
            region.write_weights(tag, values);
        }
        let mut encoded = None;
        let has_shm = self.shm.is_some();
        self.pool.broadcast(|m| {
            let in_shm = m.shm && has_shm;
            let payload = match in_shm {
                true => Bytes::new(),
                false => encoded.get_or_insert_with(|| encode_f32(values)).clone(),
            };
            body(payload, in_shm)
        });
    }

    /// Plans the announced next batch at the new weights and dispatches its tasks, held back for
    /// the step's broadcast to carry.
    fn send_ahead(&mut self) {
        let Some(next) = self.upcoming.take() else {
            return;
        };
        let Some(&first) = next.first() else {
            return;
        };
        let (jobs, assign, plan) = self.plan(&next);
        let batch = self.pool.hold_jobs(jobs, &assign);
        self.prefetched = Some(Prefetched {
            first,
            len: next.len(),
            batch,
            plan,
        });
    }

    /// Subnet outputs of `indices`, shared across the ready workers and put back in order.
    fn embed_shared(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
        state: &OptimizerState,
        views: TestAugment,
    ) -> Result<Vec<f32>, ClusterError> {
        let set = match split {
            ImageSplit::Train => ImageSet::Train,
            ImageSplit::Test => ImageSet::Test,
        };
        // Chunks of at most EMBED_TASK_IMAGES images, spread over the ready workers: every
        // answer stays within the message limit, and a task is short enough for a GPU worker,
        // which computes it on its connection's thread, to answer keepalive PINGs in time.
        let ready = self.pool.ready().len().max(1);
        let chunks = indices
            .len()
            .div_ceil(EMBED_TASK_IMAGES)
            .max(ready)
            .min(indices.len().max(1));
        let ranges = shard_ranges(indices.len(), chunks);
        let jobs = ranges
            .iter()
            .map(|r| Job {
                kind: task::Kind::Embed(EmbedTask {
                    set: set as i32,
                    indices: indices[r.clone()].to_vec(),
                    mirror: views == TestAugment::Mirror,
                }),
                version: self.version,
            })
            .collect();
        let assign: Vec<usize> = (0..ranges.len()).map(|i| i % ready).collect();
        let batch = self.pool.send_jobs(jobs, &assign);
        let sync = sync_messages(self.settings.aggregation, state);
        let done = self.pool.collect(batch, &sync, true)?;
        let width = self.spec.out_width();
        let mut out = Vec::with_capacity(indices.len() * width);
        for (d, r) in done.iter().zip(ranges) {
            let checked = match &d.body {
                worker_message::Body::Embedding(e) => checked_embeddings(&e.values, r.len(), width),
                _ => Err("not an embedding".into()),
            };
            let what = match checked {
                Ok(v) => {
                    out.extend(v);
                    continue;
                }
                Err(why) => format!("an answer to task {}: {why}", answer_task(d)),
            };
            return Err(ClusterError::Protocol {
                peer: d.peer.clone(),
                what,
            });
        }
        Ok(out)
    }

    /// The first call: waits for the run's workers, forms the NCCL group if any, and gives them
    /// all the state; later calls give it to the workers there are.
    fn start(&mut self, state: &OptimizerState) -> Result<(), ClusterError> {
        self.version = state.steps();
        self.pool.set_step(self.version);
        self.upcoming = None;
        if let Some(p) = self.prefetched.take() {
            self.pool.abandon(p.batch);
        }
        let sync = sync_messages(self.settings.aggregation, state);
        if !self.started {
            self.pool.await_members(self.world)?;
            if self.nccl() {
                rendezvous(&mut self.pool, self.settings.nccl_timeout)?;
            }
            self.started = true;
        } else {
            // Another state on replicas that hold one already (the selected weights, tested
            // at the end): every one of them loads it.
            self.pool.unready_all();
        }
        self.pool.ready_all(&sync);
        Ok(())
    }
}

/// A gradient task for `pairs`, the micro-batches from `first_micro` on.
fn gradient_kind(
    pairs: &[Pair],
    global_pairs: usize,
    micro_batch: usize,
    first_micro: usize,
) -> task::Kind {
    task::Kind::Gradient(GradientTask {
        first: pairs.iter().map(|p| p.a).collect(),
        second: pairs.iter().map(|p| p.b).collect(),
        same: pairs.iter().map(|p| p.same).collect(),
        global_pairs: global_pairs as u32,
        micro_batch: micro_batch as u32,
        first_micro: first_micro as u32,
        shm_slot: None,
    })
}

/// The task an answer names.
fn answer_task(d: &Done) -> u64 {
    match &d.body {
        worker_message::Body::Gradient(r) => r.id,
        worker_message::Body::Embedding(r) => r.id,
        worker_message::Body::Digest(r) => r.id,
        worker_message::Body::State(r) => r.id,
        _ => 0,
    }
}

impl Engine for ClusterEngine {
    fn info(&self) -> EngineInfo {
        let device = self
            .pool
            .members()
            .first()
            .map_or_else(|| "cpu".into(), |w| w.join.device.clone());
        EngineInfo {
            workers: self.world,
            device,
            aggregation: self.settings.aggregation.name().into(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        Ok(self.start(state)?)
    }

    fn gradient(
        &mut self,
        batch: &[Pair],
        state: &OptimizerState,
    ) -> Result<Contribution, TrainError> {
        self.pool.set_step(self.version);
        if !self.nccl() {
            let sync = sync_messages(self.settings.aggregation, state);
            self.pool.ready_joiners(&sync);
        }
        // Tasks sent ahead waited for the weights; fresh ones start now.
        let prefetched = match self.prefetched.take() {
            Some(p) if p.len == batch.len() && batch.first() == Some(&p.first) => Some(p),
            Some(p) => {
                self.pool.abandon(p.batch);
                None
            }
            None => None,
        };
        let (sent, plan) = match prefetched {
            Some(p) => (p.batch, p.plan),
            None => {
                let (jobs, assign, plan) = self.plan(batch);
                (self.pool.send_jobs(jobs, &assign), plan)
            }
        };
        let contribution = self.finish_step(sent, plan, state)?;
        self.clock.handed_over();
        self.version += 1;
        self.send_ahead();
        if let (Aggregation::Allreduce, Some(mean)) =
            (self.settings.aggregation, &contribution.grad)
        {
            // The mean plays the part of the weights: the replicas start on it.
            let start = self.clock.weights_start();
            self.send_reduced(mean, self.version);
            self.clock.weights_queued(start);
        }
        // `coordinator` replicas get their next tasks with the weights, once Adam has stepped.
        if self.settings.aggregation != Aggregation::CentralAdam {
            self.pool.release_tasks();
        }
        Ok(contribution)
    }

    fn prefetch(&mut self, next: &[Pair]) -> Result<(), TrainError> {
        // NCCL replicas step as soon as they compute: a step sent ahead would move them past
        // the state the coordinator checks or fetches between steps.
        if !next.is_empty() && !self.nccl() {
            self.upcoming = Some(next.to_vec());
        }
        Ok(())
    }

    fn stepped(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        match self.settings.aggregation {
            Aggregation::CentralAdam => {
                let start = self.clock.weights_start();
                self.send_weights(state);
                self.pool.release_tasks();
                self.clock.weights_queued(start);
            }
            Aggregation::Allreduce | Aggregation::Nccl => {
                if self
                    .version
                    .is_multiple_of(self.settings.digest_every.max(1))
                {
                    let expected = (!self.nccl()).then(|| state.digest());
                    let sync = sync_messages(self.settings.aggregation, state);
                    check_digests(&mut self.pool, self.version, expected, &sync)?;
                }
            }
        }
        Ok(())
    }

    fn pull_state(&mut self) -> Result<Option<OptimizerState>, TrainError> {
        if !self.nccl() {
            return Ok(None);
        }
        Ok(Some(pull_state(
            &mut self.pool,
            self.version,
            self.spec.num_params(),
        )?))
    }

    fn embed(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
        state: &OptimizerState,
        views: TestAugment,
    ) -> Result<Vec<f32>, TrainError> {
        Ok(self.embed_shared(split, indices, state, views)?)
    }

    fn timing(&self) -> StepTiming {
        self.clock.timing()
    }

    fn regroup(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        // An NCCL group cannot lose a rank: every session ends (a rank stuck in an all-reduce
        // with the lost one exits through its watchdog and comes back as a new process), and the
        // group forms again, from the state the trainer went back to.
        self.pool
            .lose_all("its NCCL group lost a rank and forms again from the last checkpoint");
        self.started = false;
        Ok(self.start(state)?)
    }

    fn membership(&self) -> Vec<MembershipEvent> {
        self.pool.membership().to_vec()
    }
}
