//! Where each training step's time goes, per worker, as the coordinator sees it.

use std::time::Instant;

use crate::results::{StepTiming, WorkerTiming};

/// One answer of a step, as the clock needs it.
pub(crate) struct Arrival<'a> {
    /// The session that answered.
    pub session: u64,
    /// Its rank.
    pub rank: u32,
    /// Its peer name.
    pub peer: &'a str,
    /// When its task could start.
    pub started: Instant,
    /// When its answer arrived.
    pub at: Instant,
    /// Compute seconds it reported.
    pub compute: f64,
}

/// Step-time bookkeeping of a [`super::ClusterEngine`], per worker session (a worker that
/// rejoins is a new row).
pub(crate) struct StepClock {
    per_worker: Vec<(u64, WorkerTiming)>,
    /// Rows that took part in the current step.
    in_step: Vec<usize>,
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
    /// A clock with no rows yet.
    pub(crate) fn new() -> Self {
        StepClock {
            per_worker: Vec::new(),
            in_step: Vec::new(),
            weights_sent: Instant::now(),
            last_arrival: None,
            handed_over: None,
            overhead: [0.0; 3],
        }
    }

    fn row(&mut self, session: u64, rank: u32, peer: &str) -> usize {
        match self.per_worker.iter().position(|(s, _)| *s == session) {
            Some(i) => i,
            None => {
                let timing = WorkerTiming {
                    rank,
                    peer: peer.to_string(),
                    ..WorkerTiming::default()
                };
                self.per_worker.push((session, timing));
                self.per_worker.len() - 1
            }
        }
    }

    /// Records a step's answers. A worker's compute is what it reported for all its tasks of
    /// the step; its transfer is the rest of the time from its first task's start to its last
    /// answer; its waiting, the time from its last answer to the step's last.
    pub(crate) fn arrivals(&mut self, answers: &[Arrival<'_>]) {
        let Some(last) = answers.iter().map(|a| a.at).max() else {
            return;
        };
        self.in_step.clear();
        for a in answers {
            let row = self.row(a.session, a.rank, a.peer);
            if !self.in_step.contains(&row) {
                self.in_step.push(row);
            }
        }
        for &row in &self.in_step {
            let session = self.per_worker[row].0;
            let mine: Vec<&Arrival<'_>> = answers.iter().filter(|a| a.session == session).collect();
            let compute: f64 = mine.iter().map(|a| a.compute).sum();
            let first = mine.iter().map(|a| a.started).min().unwrap_or(last);
            let done = mine.iter().map(|a| a.at).max().unwrap_or(last);
            let t = &mut self.per_worker[row].1;
            t.steps += 1;
            t.compute_s += compute;
            t.transfer_s +=
                (done.saturating_duration_since(first).as_secs_f64() - compute).max(0.0);
            t.waiting_s += last.saturating_duration_since(done).as_secs_f64();
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
            for &row in &self.in_step {
                self.per_worker[row].1.aggregation_s += idle;
            }
        }
    }

    /// The split so far.
    pub(crate) fn timing(&self) -> StepTiming {
        StepTiming::from_workers(self.per_worker.iter().map(|(_, t)| t.clone()).collect())
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
