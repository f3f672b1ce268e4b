//! Where each training step's time goes, per worker, as the coordinator sees it.

use std::time::Instant;

use crate::results::{StepTiming, WorkerTiming};

/// Step-time bookkeeping of a [`super::ClusterEngine`].
pub(crate) struct StepClock {
    per_worker: Vec<WorkerTiming>,
    /// When the current weights were queued for every worker.
    weights_sent: Instant,
    /// When the last gradient of the current step arrived.
    last_arrival: Option<Instant>,
    /// When the averaged gradient went to the trainer.
    handed_over: Option<Instant>,
    /// The coordinator's own share of aggregation, in seconds: last arrival to the averaged
    /// gradient (wake-up, decode, checks, mean); the trainer (prefetch, Adam); queueing weights.
    overhead: [f64; 3],
}

impl StepClock {
    /// A clock for these workers.
    pub(crate) fn new(per_worker: Vec<WorkerTiming>) -> Self {
        StepClock {
            per_worker,
            weights_sent: Instant::now(),
            last_arrival: None,
            handed_over: None,
            overhead: [0.0; 3],
        }
    }

    /// When the current weights were queued.
    pub(crate) fn weights_sent(&self) -> Instant {
        self.weights_sent
    }

    /// Records a step's gradients: `(worker index, arrival, compute the worker reported)`, for
    /// shards that could start at `sent`.
    pub(crate) fn arrivals(&mut self, sent: Instant, arrivals: &[(usize, Instant, f64)]) {
        let last = arrivals.iter().map(|a| a.1).max().unwrap_or(sent);
        for &(w, at, compute) in arrivals {
            let t = &mut self.per_worker[w];
            t.steps += 1;
            t.compute_s += compute;
            t.transfer_s += (at.saturating_duration_since(sent).as_secs_f64() - compute).max(0.0);
            t.waiting_s += last.saturating_duration_since(at).as_secs_f64();
        }
        self.last_arrival = Some(last);
    }

    /// The averaged gradient went to the trainer.
    pub(crate) fn handed_over(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last_arrival {
            self.overhead[0] += now.saturating_duration_since(last).as_secs_f64();
        }
        self.handed_over = Some(now);
    }

    /// New weights are about to be queued; returns the start time for [`StepClock::weights_queued`].
    pub(crate) fn weights_start(&mut self) -> Instant {
        let start = Instant::now();
        if let Some(t) = self.handed_over.take() {
            self.overhead[1] += start.saturating_duration_since(t).as_secs_f64();
        }
        start
    }

    /// The weights are queued for every worker: the step's aggregation ends here.
    pub(crate) fn weights_queued(&mut self, start: Instant) {
        self.weights_sent = Instant::now();
        self.overhead[2] += self
            .weights_sent
            .saturating_duration_since(start)
            .as_secs_f64();
        if let Some(last) = self.last_arrival.take() {
            let idle = self
                .weights_sent
                .saturating_duration_since(last)
                .as_secs_f64();
            self.per_worker
                .iter_mut()
                .for_each(|t| t.aggregation_s += idle);
        }
    }

    /// The split so far.
    pub(crate) fn timing(&self) -> StepTiming {
        StepTiming::from_workers(self.per_worker.clone())
    }

    /// Logs the coordinator's own share of aggregation.
    pub(crate) fn log_overhead(&self) {
        let [collect, trainer, send] = self.overhead;
        tracing::info!(
            collect_s = collect,
            trainer_s = trainer,
            send_s = send,
            "coordinator aggregation split"
        );
    }
}
