//! The training run's metrics, kept up to date by watching the run ([`RunObserver`]): steps,
//! epoch, pairs/s, loss and accuracy, workers alive, membership events, each worker's step-time
//! split, and the checkpoint's age.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::results::{EpochRecord, Membership, StepTiming};
use crate::train::{Engine, RunObserver, RunPlan, StepReport, TestScores};

/// A label set: (name, value) pairs.
type Labels = Vec<(String, String)>;
/// A floating-point gauge.
type FloatGauge = Gauge<f64, AtomicU64>;
/// A floating-point counter (seconds).
type FloatCounter = Counter<f64, AtomicU64>;

/// The metric handles (each an `Arc` inside, so clones update the same values).
#[derive(Clone, Default)]
struct Handles {
    steps: Counter,
    pairs: Counter,
    completed_steps: Gauge,
    planned_steps: Gauge,
    epoch: Gauge,
    epochs: Gauge,
    pairs_per_second: FloatGauge,
    train_loss: FloatGauge,
    train_accuracy: FloatGauge,
    val_loss: FloatGauge,
    val_accuracy: FloatGauge,
    test_accuracy: FloatGauge,
    test_auc: FloatGauge,
    workers_alive: Gauge,
    membership: Family<Labels, Counter>,
    compute: Family<Labels, FloatCounter>,
    waiting: Family<Labels, FloatCounter>,
    transfer: Family<Labels, FloatCounter>,
    aggregation: Family<Labels, FloatCounter>,
    checkpoints: Counter,
    checkpoint_age: FloatGauge,
}

/// The training metrics: a [`RunObserver`] for the run, and [`TrainingMetrics::render`] for
/// the `/metrics` endpoint (clone it for each).
#[derive(Clone)]
pub struct TrainingMetrics {
    registry: Arc<Registry>,
    h: Handles,
    /// When the last checkpoint was written (the run's start before the first).
    last_checkpoint: Arc<Mutex<Instant>>,
    /// What the observer has already counted.
    seen: Seen,
}

/// The observer's bookkeeping: totals already turned into counter increments.
#[derive(Clone, Default)]
struct Seen {
    /// Membership events of the engine already counted.
    events: usize,
    /// Per rank: compute, waiting, transfer, aggregation seconds already counted.
    timing: HashMap<String, [f64; 4]>,
    /// When the epoch's training steps began, and the pairs trained since.
    epoch_start: Option<(Instant, usize)>,
}

impl Default for TrainingMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainingMetrics {
    /// Registers every training metric under the `siamese_` prefix.
    pub fn new() -> Self {
        let h = Handles::default();
        // NaN until the run gives a value: a validation accuracy of 0 before the first epoch
        // ends would read as a failed model.
        for gauge in [
            &h.pairs_per_second,
            &h.train_loss,
            &h.train_accuracy,
            &h.val_loss,
            &h.val_accuracy,
            &h.test_accuracy,
            &h.test_auc,
        ] {
            gauge.set(f64::NAN);
        }
        let mut r = Registry::with_prefix("siamese");
        r.register(
            "training_steps",
            "Optimizer steps applied by this process",
            h.steps.clone(),
        );
        r.register(
            "training_pairs",
            "Training pairs trained by this process",
            h.pairs.clone(),
        );
        r.register(
            "training_completed_steps",
            "Optimizer steps of the run so far, those before a resume included",
            h.completed_steps.clone(),
        );
        r.register(
            "training_planned_steps",
            "Optimizer steps the whole run takes",
            h.planned_steps.clone(),
        );
        r.register(
            "training_epoch",
            "The epoch in progress (1-based)",
            h.epoch.clone(),
        );
        r.register(
            "training_epochs",
            "Epochs the run trains in all",
            h.epochs.clone(),
        );
        r.register(
            "training_pairs_per_second",
            "Training pairs per second in the epoch so far",
            h.pairs_per_second.clone(),
        );
        r.register(
            "training_loss",
            "Mean contrastive loss of the epoch's training pairs so far",
            h.train_loss.clone(),
        );
        r.register(
            "training_accuracy_ratio",
            "Pair accuracy of the epoch's training pairs so far",
            h.train_accuracy.clone(),
        );
        r.register(
            "validation_loss",
            "Mean loss on the validation pairs at the end of the last epoch",
            h.val_loss.clone(),
        );
        r.register(
            "validation_accuracy_ratio",
            "Pair accuracy on the validation pairs at the end of the last epoch",
            h.val_accuracy.clone(),
        );
        r.register(
            "test_accuracy_ratio",
            "Pair accuracy on the test pairs (set once the run is tested)",
            h.test_accuracy.clone(),
        );
        r.register(
            "test_roc_auc_ratio",
            "ROC AUC of the similarity on the test pairs (set once the run is tested)",
            h.test_auc.clone(),
        );
        r.register(
            "workers_alive",
            "Workers taking part in the run now (1 for a run in one process)",
            h.workers_alive.clone(),
        );
        r.register(
            "membership_events",
            "Workers that joined or were lost, by event",
            h.membership.clone(),
        );
        for (name, what, family) in [
            ("cluster_worker_compute", "forward and backward", &h.compute),
            (
                "cluster_worker_waiting",
                "waiting for the slowest worker",
                &h.waiting,
            ),
            (
                "cluster_worker_transfer",
                "moving blocks and gradients",
                &h.transfer,
            ),
            (
                "cluster_worker_aggregation",
                "waiting for the next weights",
                &h.aggregation,
            ),
        ] {
            r.register_with_unit(
                name,
                format!("Seconds of the training steps spent {what}, by worker rank"),
                Unit::Seconds,
                family.clone(),
            );
        }
        r.register(
            "checkpoints",
            "Checkpoints written by this process",
            h.checkpoints.clone(),
        );
        r.register_with_unit(
            "checkpoint_age",
            "Seconds since the last checkpoint was written (since the run started, before the first)",
            Unit::Seconds,
            h.checkpoint_age.clone(),
        );
        TrainingMetrics {
            registry: Arc::new(r),
            h,
            last_checkpoint: Arc::new(Mutex::new(Instant::now())),
            seen: Seen::default(),
        }
    }

    /// The metrics as OpenMetrics text, the checkpoint's age brought up to now.
    pub fn render(&self) -> String {
        let at = *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.h.checkpoint_age.set(at.elapsed().as_secs_f64());
        super::encode(&self.registry)
    }

    /// Workers alive and membership events, from the engine's events since this process began.
    fn membership(&mut self, engine: &dyn Engine) {
        let events = engine.membership();
        if events.is_empty() {
            // No membership: this process computes (`--workers 0`).
            self.h.workers_alive.set(engine.info().workers as i64);
            return;
        }
        let joined = events
            .iter()
            .filter(|e| e.event == Membership::Joined)
            .count();
        self.h
            .workers_alive
            .set(joined as i64 - (events.len() - joined) as i64);
        for e in events.iter().skip(self.seen.events) {
            let event = match e.event {
                Membership::Joined => "joined",
                Membership::Lost => "lost",
            };
            self.h
                .membership
                .get_or_create(&vec![("event".to_string(), event.to_string())])
                .inc();
        }
        self.seen.events = self.seen.events.max(events.len());
    }

    /// Each worker's step-time split as counters: the growth since the last look.
    fn timing(&mut self, t: &StepTiming) {
        let mut totals: HashMap<String, [f64; 4]> = HashMap::new();
        if t.per_worker.is_empty() {
            totals.insert(
                "local".into(),
                [t.compute_s, t.waiting_s, t.transfer_s, t.aggregation_s],
            );
        }
        // A worker that rejoins is a new row with its rank: its rows add up.
        for w in &t.per_worker {
            let sum = totals.entry(w.rank.to_string()).or_default();
            for (s, v) in
                sum.iter_mut()
                    .zip([w.compute_s, w.waiting_s, w.transfer_s, w.aggregation_s])
            {
                *s += v;
            }
        }
        for (rank, now) in totals {
            let before = self.seen.timing.entry(rank.clone()).or_default();
            let labels = vec![("rank".to_string(), rank)];
            let families = [
                &self.h.compute,
                &self.h.waiting,
                &self.h.transfer,
                &self.h.aggregation,
            ];
            for ((family, now), before) in families.into_iter().zip(now).zip(before.iter_mut()) {
                // Counters only grow: a total that went down (it cannot) would be skipped.
                if now > *before {
                    family.get_or_create(&labels).inc_by(now - *before);
                    *before = now;
                }
            }
        }
    }
}

impl RunObserver for TrainingMetrics {
    fn run_started(&mut self, plan: &RunPlan) {
        self.h.planned_steps.set(plan.total_steps as i64);
        self.h.completed_steps.set(plan.start.steps as i64);
        self.h.epochs.set(plan.epochs as i64);
        self.h.epoch.set(plan.start.epoch as i64);
        *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn epoch_started(&mut self, epoch: usize, _steps: usize, _done: usize) {
        self.h.epoch.set(epoch as i64);
        self.seen.epoch_start = Some((Instant::now(), 0));
    }

    fn step(&mut self, r: &StepReport<'_>) {
        self.h.steps.inc();
        self.h.pairs.inc_by(r.pairs as u64);
        self.h.completed_steps.set(r.position.steps as i64);
        self.h.train_loss.set(r.epoch_loss);
        self.h.train_accuracy.set(r.epoch_accuracy);
        if let Some((start, pairs)) = &mut self.seen.epoch_start {
            *pairs += r.pairs;
            let seconds = start.elapsed().as_secs_f64();
            if seconds > 0.0 {
                self.h.pairs_per_second.set(*pairs as f64 / seconds);
            }
        }
        self.membership(r.engine);
        self.timing(&r.engine.timing());
    }

    fn epoch_ended(&mut self, e: &EpochRecord, engine: &dyn Engine) {
        self.h.train_loss.set(e.train_loss);
        self.h.train_accuracy.set(e.train_accuracy);
        self.h.val_loss.set(e.val_loss);
        self.h.val_accuracy.set(e.val_accuracy);
        self.h.pairs_per_second.set(e.pairs_per_s);
        self.membership(engine);
        self.timing(&engine.timing());
    }

    fn checkpoint_written(&mut self, _steps: u64) {
        self.h.checkpoints.inc();
        *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn test_scored(&mut self, s: &TestScores<'_>) {
        self.h.test_accuracy.set(s.record.pair_accuracy);
        self.h.test_auc.set(s.record.roc_auc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::WorkerTiming;

    #[test]
    fn names_follow_the_conventions_and_timing_counts_only_growth() {
        let mut m = TrainingMetrics::new();
        let worker = |rank, compute_s| WorkerTiming {
            rank,
            peer: "p".into(),
            steps: 1,
            compute_s,
            waiting_s: 0.5,
            transfer_s: 0.25,
            aggregation_s: 0.0,
        };
        m.timing(&StepTiming::from_workers(vec![
            worker(0, 1.0),
            worker(1, 2.0),
        ]));
        // Rank 1 rejoined: its second row adds to its first.
        m.timing(&StepTiming::from_workers(vec![
            worker(0, 1.5),
            worker(1, 2.0),
            worker(1, 0.5),
        ]));
        m.checkpoint_written(3);
        let text = m.render();
        for line in [
            "# TYPE siamese_training_steps counter",
            "siamese_training_steps_total 0",
            "siamese_cluster_worker_compute_seconds_total{rank=\"0\"} 1.5",
            "siamese_cluster_worker_compute_seconds_total{rank=\"1\"} 2.5",
            "siamese_cluster_worker_waiting_seconds_total{rank=\"1\"} 1.0",
            "siamese_checkpoints_total 1",
            "siamese_validation_accuracy_ratio NaN",
            "# UNIT siamese_checkpoint_age_seconds seconds",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
