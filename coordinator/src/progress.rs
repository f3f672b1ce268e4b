//! Training progress: on a terminal, a bar per epoch (steps, pairs/s, loss, the epoch's and the
//! run's ETA); everywhere, the epoch's line once it ends (plain, JSON or nothing, as the
//! console's style says).

use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressStyle};

use crate::console::Console;
use siamese_common::results::EpochRecord;
use siamese_common::train::{Engine, RunObserver, RunPlan, StepReport};

/// The bar: epoch, steps done, loss, pairs/s and the run's ETA, then the epoch's.
const TEMPLATE: &str = "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  epoch ETA {eta}";

/// Watches the run for the console.
pub struct Progress<'c> {
    console: &'c Console,
    bar: Option<ProgressBar>,
    plan: Option<RunPlan>,
    /// When this process took its first step, and steps since (for the run's ETA).
    first_step: Option<(Instant, u64)>,
    /// When the epoch's steps began here, and pairs since (for pairs/s).
    epoch_start: (Instant, usize),
}

impl<'c> Progress<'c> {
    /// Progress on `console`.
    pub fn new(console: &'c Console) -> Self {
        Progress {
            console,
            bar: None,
            plan: None,
            first_step: None,
            epoch_start: (Instant::now(), 0),
        }
    }

    /// The run's remaining time from the mean step time so far (validation and test excluded).
    fn run_eta(&self, steps_done: u64) -> Option<Duration> {
        let (start, steps) = self.first_step?;
        let total = self.plan?.total_steps;
        if steps == 0 {
            return None;
        }
        let per_step = start.elapsed().as_secs_f64() / steps as f64;
        Some(Duration::from_secs_f64(
            per_step * total.saturating_sub(steps_done) as f64,
        ))
    }
}

impl RunObserver for Progress<'_> {
    fn run_started(&mut self, plan: &RunPlan) {
        self.plan = Some(*plan);
    }

    fn epoch_started(&mut self, epoch: usize, steps: usize, done: usize) {
        self.epoch_start = (Instant::now(), 0);
        if !self.console.shows_bars() {
            return;
        }
        // The template is a constant, checked by a test.
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let epochs = self.plan.map_or(epoch, |p| p.epochs);
        let bar = self
            .console
            .bars()
            .add(ProgressBar::new(steps as u64).with_style(style));
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_position(done as u64);
        // Resumed steps were not timed here: the ETA counts only the steps this bar sees.
        bar.reset_eta();
        self.bar = Some(bar);
    }

    fn step(&mut self, r: &StepReport<'_>) {
        let first = self.first_step.get_or_insert((Instant::now(), 0));
        first.1 += 1;
        self.epoch_start.1 += r.pairs;
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position(r.position.step_in_epoch as u64);
        let seconds = self.epoch_start.0.elapsed().as_secs_f64();
        let rate = self.epoch_start.1 as f64 / seconds.max(1e-9);
        let run = self
            .run_eta(r.position.steps)
            .map_or_else(|| "-".into(), |d| HumanDuration(d).to_string());
        bar.set_message(format!(
            "loss {:.4}  acc {:.3}  {rate:.0} pairs/s  run ETA {run}",
            r.epoch_loss, r.epoch_accuracy
        ));
    }

    fn validating(&mut self, _epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message("validating");
        }
    }

    fn epoch_ended(&mut self, record: &EpochRecord, _engine: &dyn Engine) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.console.bars().remove(&bar);
        }
        self.console.epoch(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_template_parses() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }
}
