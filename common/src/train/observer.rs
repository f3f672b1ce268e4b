//! What a training run tells whoever watches it (progress bars, Prometheus metrics, a scores
//! file): one trait with a method per moment of the run, each a no-op by default, so the epoch
//! loop stays one loop and every watcher lives in its own file.

use super::checkpoint::Position;
use super::engine::Engine;
use crate::pairs::Pair;
use crate::results::{EpochRecord, TestRecord};

/// The run's shape as it starts (or resumes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunPlan {
    /// Epochs the run trains in all.
    pub epochs: usize,
    /// Optimizer steps of a whole epoch.
    pub steps_per_epoch: usize,
    /// Optimizer steps of the whole run (the step limit included).
    pub total_steps: u64,
    /// Pairs per global batch.
    pub batch_size: usize,
    /// Where the run stands: the start, or the checkpoint it resumed.
    pub start: Position,
}

/// One optimizer step, just applied.
pub struct StepReport<'a> {
    /// Where the run stands after it.
    pub position: Position,
    /// Optimizer steps of the epoch in progress.
    pub steps_in_epoch: usize,
    /// Pairs of the step.
    pub pairs: usize,
    /// The step's summed per-pair loss.
    pub loss_sum: f64,
    /// Pairs the step classified correctly (s > 0.5 for same-class pairs).
    pub correct: usize,
    /// Mean training loss of the epoch so far (this step included).
    pub epoch_loss: f64,
    /// Training pair accuracy of the epoch so far.
    pub epoch_accuracy: f64,
    /// Who computed it: its step-time split and membership, asked only by watchers that want them.
    pub engine: &'a dyn Engine,
}

/// The test pairs with their similarity, as the run scored them for its test figures.
pub struct TestScores<'a> {
    /// The pairs (indices into the official test file).
    pub pairs: &'a [Pair],
    /// Similarity of each pair.
    pub scores: &'a [f32],
    /// Labels of the test file, so a watcher can name each image's class.
    pub labels: &'a [u8],
    /// The figures computed from them.
    pub record: &'a TestRecord,
}

/// Watches a training run. Called on the training thread between steps: keep each call short.
pub trait RunObserver {
    /// The run starts (or resumes) with this plan.
    fn run_started(&mut self, _plan: &RunPlan) {}
    /// An epoch's training steps begin (`done` of them already trained, when resumed).
    fn epoch_started(&mut self, _epoch: usize, _steps: usize, _done: usize) {}
    /// A step was applied.
    fn step(&mut self, _report: &StepReport<'_>) {}
    /// The epoch's training steps are over; validation follows.
    fn validating(&mut self, _epoch: usize) {}
    /// The epoch ended (validation included).
    fn epoch_ended(&mut self, _record: &EpochRecord, _engine: &dyn Engine) {}
    /// The checkpoint was written after `steps` optimizer steps.
    fn checkpoint_written(&mut self, _steps: u64) {}
    /// The test pairs were scored; the results file follows.
    fn test_scored(&mut self, _scores: &TestScores<'_>) {}
}

/// Watches nothing.
pub struct NoObserver;

impl RunObserver for NoObserver {}

/// Calls every observer in turn.
pub struct Observers<'a>(pub Vec<&'a mut (dyn RunObserver + Send)>);

impl RunObserver for Observers<'_> {
    fn run_started(&mut self, plan: &RunPlan) {
        self.0.iter_mut().for_each(|o| o.run_started(plan));
    }
    fn epoch_started(&mut self, epoch: usize, steps: usize, done: usize) {
        self.0
            .iter_mut()
            .for_each(|o| o.epoch_started(epoch, steps, done));
    }
    fn step(&mut self, report: &StepReport<'_>) {
        self.0.iter_mut().for_each(|o| o.step(report));
    }
    fn validating(&mut self, epoch: usize) {
        self.0.iter_mut().for_each(|o| o.validating(epoch));
    }
    fn epoch_ended(&mut self, record: &EpochRecord, engine: &dyn Engine) {
        self.0
            .iter_mut()
            .for_each(|o| o.epoch_ended(record, engine));
    }
    fn checkpoint_written(&mut self, steps: u64) {
        self.0.iter_mut().for_each(|o| o.checkpoint_written(steps));
    }
    fn test_scored(&mut self, scores: &TestScores<'_>) {
        self.0.iter_mut().for_each(|o| o.test_scored(scores));
    }
}

/// An observer that only hears about finished epochs: a closure, as the benchmarks use.
pub struct OnEpoch<F>(pub F);

impl<F: FnMut(&EpochRecord)> RunObserver for OnEpoch<F> {
    fn epoch_ended(&mut self, record: &EpochRecord, _engine: &dyn Engine) {
        (self.0)(record);
    }
}
