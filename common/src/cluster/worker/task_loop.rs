//! The worker's task loop: weights and tasks in stream order, each task once the weights it
//! names are loaded, on the calling thread (computing blocks it, which is the point: nothing
//! else runs in a worker).

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::Device;
use tokio::sync::mpsc;

use super::reducer::Reducer;
use crate::aggregation::{OptimizerState, weights_digest};
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, DigestResult, EmbedResult, GradientResult, GradientTask, ImageSet,
    ReducedGradient, Task, Weights, WeightsResult, WorkerError, WorkerMessage, coordinator_message,
    task, worker_message,
};
use crate::cluster::protocol::shm::SharedRegion;
use crate::cluster::protocol::wire::{decode_f32, encode_f32};
use crate::data::Dataset;
use crate::pairs::Pair;
use crate::train::Replica;

fn from_coordinator(what: impl Into<String>) -> ClusterError {
    ClusterError::Protocol {
        peer: "coordinator".into(),
        what: what.into(),
    }
}

/// A replicated gradient step waiting for its reduction.
struct Unreduced {
    task: u64,
    grad: Vec<f32>,
    global_pairs: usize,
}

/// One worker's replica and the state of its task stream.
pub struct TaskRunner<'a> {
    replica: Replica,
    device: Device,
    data: &'a Dataset,
    shm: Option<(SharedRegion, usize)>,
    version: u64,
    pending: VecDeque<Task>,
    scratch: Vec<f32>,
    /// This replica's own optimizer and the reducer its gradients meet through, when it steps
    /// Adam itself (allreduce, nccl).
    replicated: Option<(OptimizerState, Reducer)>,
    /// Idle (waiting for the coordinator), applying weights, computing, sending: logged at the end.
    times: [f64; 4],
}

impl<'a> TaskRunner<'a> {
    /// A runner for `replica`; `replicated` when this replica steps Adam itself.
    pub fn new(
        replica: Replica,
        device: Device,
        data: &'a Dataset,
        shm: Option<(SharedRegion, usize)>,
        replicated: Option<(OptimizerState, Reducer)>,
    ) -> Self {
        let n = replica.network().spec().num_params();
        TaskRunner {
            replica,
            device,
            data,
            shm,
            version: 0,
            pending: VecDeque::new(),
            scratch: vec![0.0; n],
            replicated,
            times: [0.0; 4],
        }
    }

    /// Serves until Stop (returns true) or the end of the stream (false).
    pub async fn serve(
        mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
        out: mpsc::Sender<WorkerMessage>,
    ) -> Result<bool, ClusterError> {
        let stopped = self.serve_inner(inbound, &out).await;
        let [idle, apply, compute, send] = self.times;
        tracing::info!(
            idle_s = idle,
            apply_weights_s = apply,
            compute_s = compute,
            send_s = send,
            "worker time split"
        );
        stopped
    }

    async fn next(
        &mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
    ) -> Result<Option<coordinator_message::Body>, ClusterError> {
        let waited = Instant::now();
        let msg = inbound.message().await.map_err(|s| ClusterError::Status {
            call: "Session",
            status: Box::new(s),
        })?;
        self.times[0] += waited.elapsed().as_secs_f64();
        Ok(msg.and_then(|m| m.body))
    }

    async fn serve_inner(
        &mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
        out: &mpsc::Sender<WorkerMessage>,
    ) -> Result<bool, ClusterError> {
        loop {
            match self.next(inbound).await? {
                None => return Ok(false),
                Some(coordinator_message::Body::Stop(s)) => {
                    tracing::info!(reason = %s.reason, "stopping");
                    return Ok(true);
                }
                Some(coordinator_message::Body::Weights(w)) => self.load_weights(w)?,
                Some(coordinator_message::Body::Task(t)) => self.pending.push_back(t),
                Some(coordinator_message::Body::Reduced(r)) => {
                    return Err(from_coordinator(format!(
                        "a reduced gradient for task {} that is not in flight",
                        r.task_id
                    )));
                }
                Some(_) => return Err(from_coordinator("an unexpected message mid-run")),
            }
            while self
                .pending
                .front()
                .is_some_and(|t| t.weights_version <= self.version)
            {
                let Some(t) = self.pending.pop_front() else {
                    break;
                };
                let start = Instant::now();
                let (reply, unreduced) = self.run_task(t);
                let sending = Instant::now();
                self.times[2] += sending.duration_since(start).as_secs_f64();
                if out.send(reply).await.is_err() {
                    return Ok(false);
                }
                self.times[3] += sending.elapsed().as_secs_f64();
                if let Some(u) = unreduced
                    && !self.reduce(u, inbound).await?
                {
                    return Ok(true);
                }
            }
        }
    }

    fn load_weights(&mut self, w: Weights) -> Result<(), ClusterError> {
        let start = Instant::now();
        let loaded = match (&self.shm, w.in_shm) {
            // A stale message: newer weights (and their message) are on the way.
            (Some((region, _)), true) => region.read_weights(w.version, &mut self.scratch),
            (None, true) => {
                return Err(from_coordinator(
                    "weights in shared memory this worker has not mapped",
                ));
            }
            (_, false) => {
                let values = decode_f32(&w.values)
                    .ok_or_else(|| from_coordinator("weights of odd byte length"))?;
                if values.len() != self.scratch.len() {
                    return Err(from_coordinator(format!(
                        "{} weights for a model of {}",
                        values.len(),
                        self.scratch.len()
                    )));
                }
                self.scratch = values;
                true
            }
        };
        if loaded {
            self.replica.set_weights(&self.scratch)?;
            if let Some((state, _)) = &mut self.replicated {
                state.params.copy_from_slice(&self.scratch);
            }
            self.version = w.version;
        }
        self.times[1] += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Completes a replicated step: the mean gradient from the reducer (NCCL here, or the
    /// coordinator's message, queueing the tasks that arrive meanwhile), then Adam. Returns
    /// false when the coordinator said Stop instead.
    async fn reduce(
        &mut self,
        u: Unreduced,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
    ) -> Result<bool, ClusterError> {
        let Some((_, reducer)) = &self.replicated else {
            return Ok(true);
        };
        let mean = match reducer.local_mean(&u.grad, u.global_pairs, &self.device)? {
            Some(mean) => mean,
            None => loop {
                match self.next(inbound).await? {
                    Some(coordinator_message::Body::Reduced(r)) if r.task_id == u.task => {
                        break self.reduced_values(r)?;
                    }
                    Some(coordinator_message::Body::Task(t)) => self.pending.push_back(t),
                    Some(coordinator_message::Body::Stop(_)) | None => return Ok(false),
                    Some(_) => {
                        return Err(from_coordinator(format!(
                            "expected the reduced gradient of task {}",
                            u.task
                        )));
                    }
                }
            },
        };
        if let Some((state, _)) = &mut self.replicated {
            state.apply(&mean)?;
            self.replica.set_weights(&state.params)?;
        }
        self.version += 1;
        Ok(true)
    }

    fn reduced_values(&self, r: ReducedGradient) -> Result<Vec<f32>, ClusterError> {
        if !r.in_shm {
            return decode_f32(&r.values)
                .ok_or_else(|| from_coordinator("a reduced gradient of odd byte length"));
        }
        let Some((region, _)) = &self.shm else {
            return Err(from_coordinator(
                "a reduced gradient in shared memory this worker has not mapped",
            ));
        };
        let mut mean = vec![0.0; region.params()];
        match region.read_weights(r.shm_version, &mut mean) {
            true => Ok(mean),
            false => Err(from_coordinator(format!(
                "the shared reduced gradient is not at version {:#x}",
                r.shm_version
            ))),
        }
    }

    fn run_task(&mut self, t: Task) -> (WorkerMessage, Option<Unreduced>) {
        let start = Instant::now();
        let id = t.id;
        let mut unreduced = None;
        let body = match t.kind {
            Some(task::Kind::Gradient(g)) => self.gradient(id, g, start).map(|(body, u)| {
                unreduced = u;
                body
            }),
            Some(task::Kind::Embed(e)) => {
                let images = if e.set == ImageSet::Test as i32 {
                    &self.data.test
                } else {
                    &self.data.train
                };
                let width = self.replica.network().spec().out_width() as u32;
                self.replica
                    .embed(images, &e.indices)
                    .map_err(ClusterError::from)
                    .map(|values| {
                        worker_message::Body::Embedding(EmbedResult {
                            id,
                            width,
                            values: encode_f32(&values),
                            compute_s: start.elapsed().as_secs_f64(),
                        })
                    })
            }
            Some(task::Kind::Digest(_)) => self.weights().map(|(w, steps)| {
                worker_message::Body::Digest(DigestResult {
                    id,
                    digest: weights_digest(&w),
                    steps,
                })
            }),
            Some(task::Kind::Weights(_)) => self.weights().map(|(w, _)| {
                worker_message::Body::WeightsResult(WeightsResult {
                    id,
                    values: encode_f32(&w),
                })
            }),
            None => Err(from_coordinator("a task without a kind")),
        };
        // The one place a failure becomes words: the coordinator reads them in its error.
        let body = body.unwrap_or_else(|e| {
            let message = e.to_string();
            tracing::error!(task = id, %message, "task failed");
            worker_message::Body::Error(WorkerError { id, message })
        });
        (WorkerMessage { body: Some(body) }, unreduced)
    }

    /// The weights this replica holds and the optimizer steps it applied itself.
    fn weights(&self) -> Result<(Vec<f32>, u64), ClusterError> {
        match &self.replicated {
            Some((state, _)) => Ok((state.params.clone(), state.steps())),
            None => Ok((self.replica.network().weights()?, 0)),
        }
    }

    fn gradient(
        &mut self,
        id: u64,
        g: GradientTask,
        start: Instant,
    ) -> Result<(worker_message::Body, Option<Unreduced>), ClusterError> {
        if g.first.len() != g.second.len() || g.first.len() != g.same.len() {
            return Err(from_coordinator(
                "a gradient task with lists of different lengths",
            ));
        }
        let replicated = g.global_pairs > 0;
        if replicated != self.replicated.is_some() {
            return Err(from_coordinator(format!(
                "a gradient task for global batch {} does not fit this run's aggregation",
                g.global_pairs
            )));
        }
        let pairs: Vec<Pair> = g
            .first
            .iter()
            .zip(&g.second)
            .zip(&g.same)
            .map(|((&a, &b), &same)| Pair { a, b, same })
            .collect();
        // A replica without pairs in this step still takes part in its reduction.
        let (grad, loss_sum, correct) = if pairs.is_empty() {
            (vec![0.0; self.scratch.len()], 0.0, 0)
        } else {
            let step = self.replica.pair_gradient(
                &self.data.train,
                &pairs,
                crate::aggregation::tree::DEFAULT_MICRO_BATCH,
            )?;
            let correct = step
                .similarity
                .iter()
                .zip(&pairs)
                .filter(|(s, p)| (**s > 0.5) == p.same)
                .count();
            (step.grad, f64::from(step.loss_sum), correct)
        };
        let carries = self
            .replicated
            .as_ref()
            .is_none_or(|(_, reducer)| reducer.coordinator_sums());
        let (bytes, in_shm) = match (&mut self.shm, carries) {
            (_, false) => (Default::default(), false),
            (Some((region, rank)), true) => {
                region.write_gradient(*rank, &grad)?;
                (Default::default(), true)
            }
            (None, true) => (encode_f32(&grad), false),
        };
        let body = worker_message::Body::Gradient(GradientResult {
            id,
            grad: bytes,
            loss_sum,
            correct: correct as u32,
            pairs: pairs.len() as u32,
            compute_s: start.elapsed().as_secs_f64(),
            in_shm,
        });
        let unreduced = replicated.then_some(Unreduced {
            task: id,
            grad,
            global_pairs: g.global_pairs as usize,
        });
        Ok((body, unreduced))
    }
}
