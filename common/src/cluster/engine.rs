//! The coordinator's side of training: shards each global batch across the admitted workers and
//! collects their gradients; then either steps the one Adam here and broadcasts the weights
//! (`coordinator`), or hands the step to replicas that step Adam themselves (`allreduce`,
//! `nccl`, in `replicated.rs`). Why both: `docs/architecture.md`.

use std::ops::Range;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::Status;

use super::ClusterError;
use super::aggregation::{Aggregation, EngineSettings};
use super::proto::{
    CoordinatorMessage, GradientTask, Stop, Task, Weights, coordinator_message, task,
    worker_message,
};
use super::service::{Inbound, WorkerLink};
use super::shm::SharedRegion;
use super::step_clock::StepClock;
use super::wire::encode_f32;
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

/// Drives the admitted workers.
pub struct ClusterEngine {
    handle: Handle,
    pub(super) workers: Vec<WorkerLink>,
    pub(super) spec: ModelSpec,
    /// Weights version: sets of weights sent, plus (replicated runs) steps the replicas applied.
    pub(super) version: u64,
    next_id: u64,
    pub(super) settings: EngineSettings,
    prefetched: Option<Prefetched>,
    pub(super) clock: StepClock,
    /// The shared file of the workers on this host, when any of them mapped it.
    pub(super) shm: Option<SharedRegion>,
    /// Optimizer steps the replicas applied (replicated runs).
    pub(super) replica_steps: u64,
}

impl ClusterEngine {
    /// Waits (up to the join timeout) until `world` workers were admitted, ordered by rank, and
    /// for NCCL runs relays rank 0's NCCL id until every communicator is up; `shm` is the
    /// shared file offered to workers on this host. A message on `dead` (a local worker
    /// process exited) ends the wait at once.
    pub fn admit(
        handle: Handle,
        (links, dead): (&mut mpsc::Receiver<WorkerLink>, &mut mpsc::Receiver<String>),
        world: usize,
        spec: ModelSpec,
        settings: EngineSettings,
        shm: Option<SharedRegion>,
    ) -> Result<Self, ClusterError> {
        let join_timeout = settings.join_timeout;
        let mut workers = Vec::with_capacity(world);
        let deadline = tokio::time::Instant::now() + join_timeout;
        while workers.len() < world {
            let next = handle.block_on(tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    link = links.recv() => Ok(link),
                    Some(why) = dead.recv() => Err(why),
                }
            }));
            match next {
                Ok(Err(why)) => {
                    return Err(ClusterError::Setup(format!(
                        "{why} before all workers joined (its log above says why)"
                    )));
                }
                Ok(Ok(Some(link))) => workers.push(link),
                Ok(Ok(None)) => {
                    return Err(ClusterError::Setup(
                        "the server stopped while workers were joining".into(),
                    ));
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        what: format!("{world} workers to join ({} joined)", workers.len()),
                        secs: join_timeout.as_secs(),
                    });
                }
            }
        }
        workers.sort_by_key(|w| w.rank);
        // Every worker that will map the file has mapped it by now.
        let shm = shm
            .filter(|_| workers.iter().any(|w| w.shm))
            .map(|mut region| {
                region.unlink();
                region
            });
        tracing::info!(
            shared_memory = workers.iter().filter(|w| w.shm).count(),
            grpc = workers.iter().filter(|w| !w.shm).count(),
            "weights and gradients transport"
        );
        let timing = workers
            .iter()
            .map(|w| WorkerTiming {
                rank: w.rank,
                peer: w.peer.clone(),
                ..WorkerTiming::default()
            })
            .collect();
        let mut engine = ClusterEngine {
            handle,
            workers,
            spec,
            version: 0,
            next_id: 0,
            settings,
            prefetched: None,
            clock: StepClock::new(timing),
            shm,
            replica_steps: 0,
        };
        if settings.aggregation == Aggregation::Nccl {
            engine.rendezvous()?;
        }
        Ok(engine)
    }

    /// Number of workers.
    pub fn world(&self) -> usize {
        self.workers.len()
    }

    pub(super) fn send(
        &self,
        w: usize,
        body: coordinator_message::Body,
    ) -> Result<(), ClusterError> {
        let link = &self.workers[w];
        let msg: Result<CoordinatorMessage, Status> = Ok(CoordinatorMessage { body: Some(body) });
        // The channel's own path for synchronous callers: cheaper than entering the runtime.
        link.to_worker
            .blocking_send(msg)
            .map_err(|_| ClusterError::WorkerLost {
                rank: link.rank,
                peer: link.peer.clone(),
                why: "its session is closed".into(),
            })
    }

    pub(super) fn task(
        &mut self,
        w: usize,
        version: u64,
        kind: task::Kind,
    ) -> Result<u64, ClusterError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(
            w,
            coordinator_message::Body::Task(Task {
                id,
                weights_version: version,
                kind: Some(kind),
            }),
        )?;
        Ok(id)
    }

    /// The next message of worker `w`, with its arrival time.
    pub(super) fn receive(
        &mut self,
        w: usize,
        id: u64,
    ) -> Result<(Instant, worker_message::Body), ClusterError> {
        self.receive_within(w, self.settings.step_timeout, &format!("answer task {id}"))
    }

    /// The next message of worker `w` within `limit`; `what` says what it was to do.
    pub(super) fn receive_within(
        &mut self,
        w: usize,
        limit: Duration,
        what: &str,
    ) -> Result<(Instant, worker_message::Body), ClusterError> {
        let link = &mut self.workers[w];
        let lost = |why: String| ClusterError::WorkerLost {
            rank: link.rank,
            peer: link.peer.clone(),
            why,
        };
        match self
            .handle
            .block_on(tokio::time::timeout(limit, link.from_worker.recv()))
        {
            Err(_) => Err(ClusterError::Timeout {
                what: format!("worker {} ({}) to {what}", link.rank, link.peer),
                secs: limit.as_secs(),
            }),
            Ok(None) => Err(lost("its session ended".into())),
            Ok(Some(Inbound::Lost(why))) => Err(lost(why)),
            Ok(Some(Inbound::Message(at, msg))) => match msg.body {
                Some(worker_message::Body::Error(e)) => Err(ClusterError::WorkerFailed {
                    rank: link.rank,
                    peer: link.peer.clone(),
                    message: e.message,
                }),
                Some(body) => Ok((at, body)),
                None => Err(ClusterError::Protocol {
                    peer: link.peer.clone(),
                    what: "an empty message".into(),
                }),
            },
        }
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
            ids.push(Some(self.task(w, version, kind)?));
        }
        Ok(ids)
    }

    /// Tells every worker to stop.
    pub fn stop(&mut self, reason: &str) {
        self.clock.log_overhead();
        for w in 0..self.world() {
            let _ = self.send(
                w,
                coordinator_message::Body::Stop(Stop {
                    reason: reason.into(),
                }),
            );
        }
    }
}

impl Engine for ClusterEngine {
    fn info(&self) -> EngineInfo {
        let device = self
            .workers
            .first()
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
        Ok(self.replica_weights()?)
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
            let in_shm = self.workers[w].shm;
            let values = match in_shm {
                true => Default::default(),
                false => encoded.get_or_insert_with(|| encode_f32(weights)).clone(),
            };
            let body = coordinator_message::Body::Weights(Weights {
                version: self.version,
                values,
                in_shm,
            });
            self.send(w, body)?;
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
