//! The worker's task loop: the run's state, its updates and the tasks in stream order, each task
//! once the weights it names are loaded, on the calling thread (computing blocks it, which is the
//! point: nothing else runs in a worker), except a task too long to keep the connection waiting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::mpsc;

use super::long_tasks::LongTaskPool;
use super::nccl_reducer::NcclReducer;
use crate::aggregation::tree::BLOCK_PAIRS_AT_MOST;
use crate::aggregation::{OptimizerState, check_finite, weights_digest};
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, DigestResult, EmbedResult, EmbedTask, GradientResult, GradientTask,
    ImageSet, ReducedGradient, ReplicaState, StateResult, Task, Weights, WorkerError,
    WorkerMessage, coordinator_message, task, worker_message,
};
use crate::cluster::protocol::shm::{REDUCED, SharedRegion};
use crate::cluster::protocol::wire::{decode_f32, encode_f32};
use crate::data::{Dataset, TestAugment};
use crate::model::PairStep;
use crate::optim::AdamConfig;
use crate::pairs::Pair;
use crate::telemetry::WorkerMetrics;
use crate::train::Replica;

/// How long an answer may wait for room in the outgoing stream: a coordinator that reads none
/// of this worker's answers for that long is treated as gone (the worker reconnects).
const SEND_DEADLINE: Duration = Duration::from_secs(120);

fn from_coordinator(what: impl Into<String>) -> ClusterError {
    ClusterError::Protocol {
        peer: "coordinator".into(),
        what: what.into(),
    }
}

/// A task's answer, or its failure in words: the one place a failure becomes words, which the
/// coordinator reads in its error.
fn answer_or_error(id: u64, body: Result<worker_message::Body, ClusterError>) -> WorkerMessage {
    let body = body.unwrap_or_else(|e| {
        let message = e.to_string();
        tracing::error!(task = id, %message, "task failed");
        worker_message::Body::Error(WorkerError { id, message })
    });
    WorkerMessage { body: Some(body) }
}

/// The replica, which is here whenever the runner does anything but wait for a long task.
fn present(replica: &mut Option<Replica>) -> Result<&mut Replica, ClusterError> {
    replica.as_mut().ok_or_else(replica_away)
}

fn replica_away() -> ClusterError {
    ClusterError::Setup("the replica did not come back from a long task".into())
}

/// The answer to an embedding task: its images' embeddings.
fn embed(
    replica: &mut Replica,
    data: &Dataset,
    id: u64,
    e: EmbedTask,
    start: Instant,
) -> Result<worker_message::Body, ClusterError> {
    let images = if e.set == ImageSet::Test as i32 {
        &data.test
    } else {
        &data.train
    };
    let width = replica.network().spec().out_width() as u32;
    let views = match e.mirror {
        true => TestAugment::Mirror,
        false => TestAugment::None,
    };
    let values = replica.embed(images, &e.indices, views)?;
    Ok(worker_message::Body::Embedding(EmbedResult {
        id,
        width,
        values: encode_f32(&values),
        compute_s: start.elapsed().as_secs_f64(),
    }))
}

/// A task's kind, as the metrics name it.
fn task_kind(t: &Task) -> &'static str {
    match t.kind {
        Some(task::Kind::Gradient(_)) => "gradient",
        Some(task::Kind::Embed(_)) => "embed",
        Some(task::Kind::Digest(_)) => "digest",
        Some(task::Kind::State(_)) => "state",
        None => "none",
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The coordinator said Stop: the run is over for this worker.
    Stopped,
    /// The stream ended without Stop: the coordinator went away (or closed this session).
    Dropped,
}

/// One worker's replica and the state of its task stream.
pub struct TaskRunner {
    /// Away (`None`) only while a long task computes on the long-task pool, when this runner
    /// waits for it and runs nothing else.
    replica: Option<Replica>,
    device: Device,
    data: Arc<Dataset>,
    shm: Option<SharedRegion>,
    /// The weights version loaded; none before the first Weights or State.
    version: Option<u64>,
    pending: VecDeque<Task>,
    scratch: Vec<f32>,
    /// This replica's own Adam, when it steps it (allreduce, nccl).
    optimizer: Option<OptimizerState>,
    /// NCCL runs: the group its gradients are all-reduced in.
    reducer: Option<NcclReducer>,
    /// Idle (waiting for the coordinator), applying weights, computing, sending: logged at the end.
    times: [f64; 4],
    /// The same times and the tasks, as metrics (`--metrics-listen`).
    metrics: Option<WorkerMetrics>,
    /// Threads for tasks too long to compute on the connection's thread: started by `serve` for a
    /// CPU replica outside any NCCL group, the only ones that may compute elsewhere.
    long_pool: Option<LongTaskPool>,
}

impl TaskRunner {
    /// A runner for `replica`; `optimizer` when this replica steps Adam itself, `reducer` when
    /// it all-reduces through NCCL.
    pub fn new(
        replica: Replica,
        device: Device,
        data: Arc<Dataset>,
        shm: Option<SharedRegion>,
        (optimizer, reducer): (Option<OptimizerState>, Option<NcclReducer>),
    ) -> Self {
        let n = replica.network().spec().num_params();
        TaskRunner {
            replica: Some(replica),
            device,
            data,
            shm,
            version: None,
            pending: VecDeque::new(),
            scratch: vec![0.0; n],
            optimizer,
            reducer,
            times: [0.0; 4],
            metrics: None,
            long_pool: None,
        }
    }

    /// Keeps `metrics` up to date as well.
    pub fn with_metrics(mut self, metrics: Option<WorkerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves until Stop or the end of the stream.
    pub async fn serve(
        mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
        out: mpsc::Sender<WorkerMessage>,
    ) -> Result<SessionEnd, ClusterError> {
        // Started before the first task, so that a run's first long task (its first test
        // embeddings, when they are timed) does not wait for the threads.
        // A GPU's context and an NCCL communicator stay on their thread.
        if matches!(self.device, Device::Cpu) && self.reducer.is_none() {
            self.long_pool = Some(LongTaskPool::start()?);
        }
        let end = self.serve_inner(inbound, &out).await;
        let [idle, apply, compute, send] = self.times;
        tracing::info!(
            idle_s = idle,
            apply_weights_s = apply,
            compute_s = compute,
            send_s = send,
            "worker time split"
        );
        end
    }

    async fn next(
        &mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
    ) -> Result<Option<CoordinatorMessage>, ClusterError> {
        let waited = Instant::now();
        let msg = inbound
            .message()
            .await
            .map_err(ClusterError::status("Session"))?;
        let idle = waited.elapsed().as_secs_f64();
        self.times[0] += idle;
        if let Some(m) = &self.metrics {
            m.idle(idle);
        }
        Ok(msg)
    }

    async fn serve_inner(
        &mut self,
        inbound: &mut tonic::Streaming<CoordinatorMessage>,
        out: &mpsc::Sender<WorkerMessage>,
    ) -> Result<SessionEnd, ClusterError> {
        loop {
            let start = Instant::now();
            let Some(message) = self.next(inbound).await? else {
                return Ok(SessionEnd::Dropped);
            };
            if let Some(end) = self.take(message)? {
                return Ok(end);
            }
            let apply = start.elapsed().as_secs_f64();
            self.times[1] += apply;
            if let Some(m) = &self.metrics {
                m.apply(apply);
            }
            loop {
                let start = Instant::now();
                let Some(task) = self.next_ready() else {
                    break;
                };
                let kind = task_kind(&task);
                let reply = match self.is_long(&task) {
                    true => self.run_long(task).await,
                    false => self.run_task(task),
                };
                let sending = Instant::now();
                let compute = sending.duration_since(start).as_secs_f64();
                self.times[2] += compute;
                match tokio::time::timeout(SEND_DEADLINE, out.send(reply)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return Ok(SessionEnd::Dropped),
                }
                let send = sending.elapsed().as_secs_f64();
                self.times[3] += send;
                if let Some(m) = &self.metrics {
                    m.task(kind, compute);
                    m.send(send);
                }
                // The runtime has this one thread, and neither a send into a channel with room
                // nor reading a message already buffered yields: without this, queued tasks, or
                // tasks sent one a message, ran back to back and the connection missed keepalive
                // PINGs (declared lost) when they took longer than two. One yield is one
                // zero-timeout poll of the I/O driver.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Takes one message of the run: its body (the state: weights, Adam's, a mean gradient; a
    /// task to queue; or the end), then the tasks it carries, queued in order; `Some` when the
    /// session ends. Errors name what the coordinator sent wrong; this and `run_next` are all
    /// the fuzz target drives.
    pub fn take(
        &mut self,
        message: CoordinatorMessage,
    ) -> Result<Option<SessionEnd>, ClusterError> {
        let end = match message.body {
            Some(body) => self.take_body(body)?,
            None if message.tasks.is_empty() => {
                return Err(from_coordinator("a message with neither a body nor tasks"));
            }
            None => None,
        };
        if end.is_none() {
            self.pending.extend(message.tasks);
        }
        Ok(end)
    }

    fn take_body(
        &mut self,
        body: coordinator_message::Body,
    ) -> Result<Option<SessionEnd>, ClusterError> {
        match body {
            coordinator_message::Body::Stop(s) if s.failed => {
                return Err(ClusterError::RunFailed(s.reason));
            }
            coordinator_message::Body::Stop(s) => {
                tracing::info!(reason = %s.reason, "stopping");
                return Ok(Some(SessionEnd::Stopped));
            }
            coordinator_message::Body::Weights(w) => self.load_weights(w)?,
            coordinator_message::Body::State(s) => self.load_state(s)?,
            coordinator_message::Body::Reduced(r) => self.apply_reduced(r)?,
            coordinator_message::Body::Task(t) => self.pending.push_back(t),
            _ => return Err(from_coordinator("an unexpected message mid-run")),
        }
        Ok(None)
    }

    /// Runs the first queued task if the weights it names are loaded: its kind and its answer
    /// (a task that fails is answered with the error). Every task runs on the calling thread.
    pub fn run_next(&mut self) -> Option<(&'static str, WorkerMessage)> {
        let t = self.next_ready()?;
        let kind = task_kind(&t);
        Some((kind, self.run_task(t)))
    }

    /// The first queued task, taken from the queue if the weights it names are loaded.
    fn next_ready(&mut self) -> Option<Task> {
        let version = self.version?;
        if self
            .pending
            .front()
            .is_none_or(|t| t.weights_version > version)
        {
            return None;
        }
        self.pending.pop_front()
    }

    /// Whether `t` runs on the long-task pool: on a CPU replica that steps no NCCL group, a task
    /// of more images than a gradient block's: a gradient task that is one micro-batch the
    /// coordinator could not cut (one backward call, seconds long), or an embedding task of up
    /// to 512 images (seconds on the portable kernels). Smaller ones stay here: they end well
    /// within a PING's period, and handing them over added 2 ms to a 100-pair test's 6 ms.
    fn is_long(&self, t: &Task) -> bool {
        self.long_pool.is_some()
            && match &t.kind {
                Some(task::Kind::Gradient(g)) => g.first.len() > BLOCK_PAIRS_AT_MOST,
                Some(task::Kind::Embed(e)) => e.indices.len() > 2 * BLOCK_PAIRS_AT_MOST,
                _ => false,
            }
    }

    /// Runs a long task on the long-task pool while this thread goes on serving the
    /// connection: the runtime has this one thread, and a call of seconds on it left the
    /// coordinator's keepalive PINGs unanswered, which declares the worker lost.
    async fn run_long(&mut self, t: Task) -> WorkerMessage {
        let start = Instant::now();
        let id = t.id;
        let body = match t.kind {
            Some(task::Kind::Gradient(g)) => {
                self.long_gradient(id, t.weights_version, g, start).await
            }
            Some(task::Kind::Embed(e)) => self
                .away(move |replica, data| embed(replica, data, id, e, start))
                .await
                .and_then(|answer| answer),
            kind => return self.run_task(Task { kind, ..t }),
        };
        answer_or_error(id, body)
    }

    /// A gradient task's pairs computed on the long-task pool.
    async fn long_gradient(
        &mut self,
        id: u64,
        version: u64,
        g: GradientTask,
        start: Instant,
    ) -> Result<worker_message::Body, ClusterError> {
        let pairs = self.gradient_pairs(version, &g)?;
        let per = (g.micro_batch as usize).max(1);
        let (pairs, step) = self
            .away(move |replica, data| {
                let step = replica.pair_gradient(&data.train, &pairs, per);
                (pairs, step)
            })
            .await?;
        self.gradient_answer(id, &g, &pairs, Some(step?), start)
    }

    /// `work` done with the replica lent to the long-task pool, and the replica back.
    async fn away<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Replica, &Dataset) -> T + Send + 'static,
    ) -> Result<T, ClusterError> {
        let Some(pool) = &self.long_pool else {
            return Err(ClusterError::Setup(
                "a long task without the long-task pool".into(),
            ));
        };
        let replica = self.replica.take().ok_or_else(replica_away)?;
        let (replica, out) = pool.lend(replica, self.data.clone(), work).await?;
        self.replica = Some(replica);
        Ok(out)
    }

    fn decode_params(&self, bytes: &[u8], what: &str) -> Result<Vec<f32>, ClusterError> {
        match decode_f32(bytes) {
            Some(v) if v.len() == self.scratch.len() => match check_finite(&v) {
                Ok(()) => Ok(v),
                Err(e) => Err(from_coordinator(format!("{what}: {e}"))),
            },
            Some(v) => Err(from_coordinator(format!(
                "{} {what} for a model of {}",
                v.len(),
                self.scratch.len()
            ))),
            None => Err(from_coordinator(format!("{what} of odd byte length"))),
        }
    }

    /// New weights for a replica whose Adam is the coordinator's.
    fn load_weights(&mut self, w: Weights) -> Result<(), ClusterError> {
        if self.optimizer.is_some() {
            return Err(from_coordinator(
                "bare weights for a replica that steps Adam itself",
            ));
        }
        let loaded = match (&self.shm, w.in_shm) {
            // A stale message: newer weights (and their message) are on the way.
            (Some(region), true) => region.read_weights(w.version, &mut self.scratch),
            (None, true) => {
                return Err(from_coordinator(
                    "weights in shared memory this worker has not mapped",
                ));
            }
            (_, false) => {
                self.scratch = self.decode_params(&w.values, "weights")?;
                true
            }
        };
        if loaded {
            check_finite(&self.scratch)
                .map_err(|e| from_coordinator(format!("shared weights: {e}")))?;
            present(&mut self.replica)?.set_weights(&self.scratch)?;
            self.version = Some(w.version);
        }
        Ok(())
    }

    /// The whole state of a replica that steps Adam itself (at join, resume or regroup).
    fn load_state(&mut self, s: ReplicaState) -> Result<(), ClusterError> {
        let params = self.decode_params(&s.params, "weights")?;
        let m = self.decode_params(&s.adam_m, "first moments")?;
        let v = self.decode_params(&s.adam_v, "second moments")?;
        let config: AdamConfig = serde_json::from_str(&s.adam_config_json)
            .map_err(|e| from_coordinator(format!("Adam settings: {e}")))?;
        config
            .check()
            .map_err(|e| from_coordinator(format!("Adam settings: {e}")))?;
        let Some(optimizer) = &mut self.optimizer else {
            return Err(from_coordinator(
                "an optimizer state for a replica whose Adam is the coordinator's",
            ));
        };
        optimizer.params = params;
        optimizer.adam.m = m;
        optimizer.adam.v = v;
        optimizer.adam.t = s.version;
        optimizer.adam.config = config;
        present(&mut self.replica)?.set_weights(&optimizer.params)?;
        self.version = Some(s.version);
        Ok(())
    }

    /// One step's mean for a replica that steps Adam itself; it must be the next step.
    fn apply_reduced(&mut self, r: ReducedGradient) -> Result<(), ClusterError> {
        if self.version.map(|v| v + 1) != Some(r.version) {
            return Err(from_coordinator(format!(
                "the mean of step {} for a replica at {:?}",
                r.version, self.version
            )));
        }
        let mean = match (&self.shm, r.in_shm) {
            (_, false) => self.decode_params(&r.values, "mean gradient values")?,
            (None, true) => {
                return Err(from_coordinator(
                    "a mean gradient in shared memory this worker has not mapped",
                ));
            }
            (Some(region), true) => {
                let mut mean = vec![0.0; self.scratch.len()];
                if !region.read_weights(REDUCED | r.version, &mut mean) {
                    return Err(from_coordinator(format!(
                        "the shared mean gradient is not at step {}",
                        r.version
                    )));
                }
                mean
            }
        };
        let Some(optimizer) = &mut self.optimizer else {
            return Err(from_coordinator(
                "a mean gradient for a replica whose Adam is the coordinator's",
            ));
        };
        optimizer.apply(&mean)?;
        present(&mut self.replica)?.set_weights(&optimizer.params)?;
        self.version = Some(r.version);
        Ok(())
    }

    fn run_task(&mut self, t: Task) -> WorkerMessage {
        let start = Instant::now();
        let id = t.id;
        let body = match t.kind {
            Some(task::Kind::Gradient(g)) => self.gradient(id, t.weights_version, g, start),
            Some(task::Kind::Embed(e)) => match present(&mut self.replica) {
                Ok(replica) => embed(replica, &self.data, id, e, start),
                Err(e) => Err(e),
            },
            Some(task::Kind::Digest(_)) => self.weights().map(|(w, steps)| {
                worker_message::Body::Digest(DigestResult {
                    id,
                    digest: weights_digest(&w),
                    steps,
                })
            }),
            Some(task::Kind::State(_)) => match &self.optimizer {
                Some(o) => Ok(worker_message::Body::State(StateResult {
                    id,
                    params: encode_f32(&o.params),
                    adam_m: encode_f32(&o.adam.m),
                    adam_v: encode_f32(&o.adam.v),
                    steps: o.steps(),
                })),
                None => Err(from_coordinator(
                    "a state request to a replica whose Adam is the coordinator's",
                )),
            },
            None => Err(from_coordinator("a task without a kind")),
        };
        answer_or_error(id, body)
    }

    /// The weights this replica holds and the optimizer steps they are at.
    fn weights(&self) -> Result<(Vec<f32>, u64), ClusterError> {
        match &self.optimizer {
            Some(o) => Ok((o.params.clone(), o.steps())),
            None => {
                let replica = self.replica.as_ref().ok_or_else(replica_away)?;
                Ok((replica.network().weights()?, self.version.unwrap_or(0)))
            }
        }
    }

    fn gradient(
        &mut self,
        id: u64,
        version: u64,
        g: GradientTask,
        start: Instant,
    ) -> Result<worker_message::Body, ClusterError> {
        let pairs = self.gradient_pairs(version, &g)?;
        let step = if pairs.is_empty() {
            None
        } else {
            let per = (g.micro_batch as usize).max(1);
            let replica = present(&mut self.replica)?;
            Some(replica.pair_gradient(&self.data.train, &pairs, per)?)
        };
        self.gradient_answer(id, &g, &pairs, step, start)
    }

    /// A gradient task's pairs, once it is checked against this replica: its weights, its
    /// aggregation, its lists' lengths.
    fn gradient_pairs(&self, version: u64, g: &GradientTask) -> Result<Vec<Pair>, ClusterError> {
        if g.first.len() != g.second.len() || g.first.len() != g.same.len() {
            return Err(from_coordinator(
                "a gradient task with lists of different lengths",
            ));
        }
        if self.version != Some(version) {
            return Err(from_coordinator(format!(
                "a gradient task at weights {version} for a replica at {:?}",
                self.version
            )));
        }
        let nccl = g.global_pairs > 0;
        if nccl != self.reducer.is_some() {
            return Err(from_coordinator(format!(
                "a gradient task for global batch {} does not fit this run's aggregation",
                g.global_pairs
            )));
        }
        Ok(g.first
            .iter()
            .zip(&g.second)
            .zip(&g.same)
            .map(|((&a, &b), &same)| Pair { a, b, same })
            .collect())
    }

    /// The answer to a gradient task whose pairs gave `step` (none for no pairs): the gradient
    /// written to shared memory, all-reduced, or carried in the message.
    fn gradient_answer(
        &mut self,
        id: u64,
        g: &GradientTask,
        pairs: &[Pair],
        step: Option<PairStep>,
        start: Instant,
    ) -> Result<worker_message::Body, ClusterError> {
        // A replica without pairs in this step still takes part in it (its reduction, or, for
        // allreduce, the step's rhythm that keeps its shared-memory reads in order).
        let (grad, loss_sum, correct) = match step {
            None => (vec![0.0; self.scratch.len()], 0.0, 0),
            Some(step) => {
                let correct = step
                    .similarity
                    .iter()
                    .zip(pairs)
                    .filter(|(s, p)| (**s > 0.5) == p.same)
                    .count();
                (step.grad, f64::from(step.loss_sum), correct)
            }
        };
        let (bytes, in_shm) = match (&self.reducer, &mut self.shm, g.shm_slot) {
            (Some(_), ..) => {
                self.nccl_step(&grad, g.global_pairs as usize)?;
                (Default::default(), false)
            }
            (None, Some(region), Some(slot)) if !pairs.is_empty() => {
                region.write_gradient(slot as usize, &grad)?;
                (Default::default(), true)
            }
            (None, ..) if pairs.is_empty() => (Default::default(), false),
            (None, ..) => (encode_f32(&grad), false),
        };
        Ok(worker_message::Body::Gradient(GradientResult {
            id,
            grad: bytes,
            loss_sum,
            correct: correct as u32,
            pairs: pairs.len() as u32,
            compute_s: start.elapsed().as_secs_f64(),
            in_shm,
        }))
    }

    /// NCCL: the step's mean all-reduced with the other ranks, then Adam.
    fn nccl_step(&mut self, grad: &[f32], global_pairs: usize) -> Result<(), ClusterError> {
        let (Some(reducer), Some(optimizer)) = (&self.reducer, &mut self.optimizer) else {
            return Err(from_coordinator("an NCCL step without a communicator"));
        };
        let mean = reducer.mean(grad, global_pairs, &self.device)?;
        optimizer.apply(&mean)?;
        present(&mut self.replica)?.set_weights(&optimizer.params)?;
        self.version = self.version.map(|v| v + 1);
        Ok(())
    }
}
