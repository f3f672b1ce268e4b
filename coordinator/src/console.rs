//! What a training run prints: the plan, a line per epoch and the summary, as plain lines on
//! stdout (lifted around the progress bars on a terminal), as JSON log events with
//! `--log-format json` (so that every line a pod writes parses), or nothing with `--quiet`.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{MultiProgress, ProgressDrawTarget};

use crate::output_args::OutputArgs;
use siamese_common::config::TrainConfig;
use siamese_common::logging::LogFormat;
use siamese_common::results::{EpochRecord, RunResults};
use siamese_common::train::TrainingData;

/// How the run's lines come out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Plain lines on stdout.
    Plain,
    /// Structured events in the JSON log.
    Json,
    /// Nothing.
    Quiet,
}

/// The run's output: its style, and the progress bars (drawn on stderr when it is a terminal).
pub struct Console {
    style: Style,
    bars: MultiProgress,
    show_bars: bool,
}

impl Console {
    /// The console the flags ask for; bars only on a terminal, in plain style.
    pub fn new(args: &OutputArgs) -> Self {
        let style = match (args.quiet, args.log_format) {
            (true, _) => Style::Quiet,
            (false, LogFormat::Json) => Style::Json,
            (false, LogFormat::Text) => Style::Plain,
        };
        let show_bars = style == Style::Plain && std::io::stderr().is_terminal();
        let target = match show_bars {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        Console {
            style,
            bars: MultiProgress::with_draw_target(target),
            show_bars,
        }
    }

    /// The bars' container (log lines are written around it).
    pub fn bars(&self) -> &MultiProgress {
        &self.bars
    }

    /// Whether progress bars are drawn.
    pub fn shows_bars(&self) -> bool {
        self.show_bars
    }

    /// A plain line on stdout, the bars lifted around it.
    pub fn line(&self, text: &str) {
        if self.style == Style::Plain {
            self.bars.suspend(|| println!("{text}"));
        }
    }

    /// The run's plan: data sizes, epochs and who computes.
    pub fn plan(&self, cfg: &TrainConfig, data: &TrainingData, workers: usize) {
        let who = match workers {
            0 => format!(
                "this process ({})",
                count(cfg.threads_per_process(1), "thread")
            ),
            n => count(n, "worker"),
        };
        match self.style {
            Style::Plain => self.line(&format!(
                "{}: {} training images, {} validation pairs, {} test pairs; {} of batch {} on {who}",
                data.dataset.kind.name(),
                data.train_pool.len(),
                data.val_pairs.len(),
                data.test_pairs.len(),
                count(cfg.epochs(), "epoch"),
                cfg.batch_size,
            )),
            Style::Json => tracing::info!(
                dataset = data.dataset.kind.name(),
                training_images = data.train_pool.len(),
                validation_pairs = data.val_pairs.len(),
                test_pairs = data.test_pairs.len(),
                epochs = cfg.epochs(),
                batch_size = cfg.batch_size,
                workers,
                "plan"
            ),
            Style::Quiet => {}
        }
    }

    /// One epoch's figures.
    pub fn epoch(&self, e: &EpochRecord) {
        match self.style {
            Style::Plain => self.line(&format!(
                "epoch {:>4}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.2} s ({:.0} pairs/s)",
                e.epoch,
                e.train_loss,
                e.train_accuracy,
                e.val_loss,
                e.val_accuracy,
                e.seconds,
                e.pairs_per_s
            )),
            Style::Json => tracing::info!(
                epoch = e.epoch,
                train_loss = e.train_loss,
                train_accuracy = e.train_accuracy,
                val_loss = e.val_loss,
                val_accuracy = e.val_accuracy,
                seconds = e.seconds,
                pairs_per_s = e.pairs_per_s,
                "epoch"
            ),
            Style::Quiet => {}
        }
    }

    /// The test figures, each worker's step-time split and where the outputs went.
    pub fn summary(&self, r: &RunResults, out: &Path, extra: &[(&str, &Path)]) {
        let t = &r.test;
        match self.style {
            Style::Plain => {
                self.line(&format!(
                    "test: {} pairs  pair accuracy {:.4}  ROC AUC {:.4}  nearest-class-mean accuracy {:.4}  test time {:.3} s ({:.0} images/s)",
                    t.pairs, t.pair_accuracy, t.roc_auc, t.ncm_accuracy, t.time_s, t.images_per_s
                ));
                for w in &r.timing.per_worker {
                    self.line(&format!(
                        "worker {} ({}): {} steps  compute {:.2} s  waiting {:.2} s  transfer {:.2} s  aggregation {:.2} s  ({:.1}% outside compute)",
                        w.rank,
                        w.peer,
                        w.steps,
                        w.compute_s,
                        w.waiting_s,
                        w.transfer_s,
                        w.aggregation_s,
                        100.0 * w.comm_share()
                    ));
                }
                self.line(&format!("results written to {}", out.display()));
                for (what, path) in extra {
                    self.line(&format!("{what} written to {}", path.display()));
                }
            }
            Style::Json => {
                tracing::info!(
                    pairs = t.pairs,
                    pair_accuracy = t.pair_accuracy,
                    roc_auc = t.roc_auc,
                    ncm_accuracy = t.ncm_accuracy,
                    time_s = t.time_s,
                    images_per_s = t.images_per_s,
                    "test"
                );
                for w in &r.timing.per_worker {
                    tracing::info!(
                        rank = w.rank,
                        peer = %w.peer,
                        steps = w.steps,
                        compute_s = w.compute_s,
                        waiting_s = w.waiting_s,
                        transfer_s = w.transfer_s,
                        aggregation_s = w.aggregation_s,
                        "worker timing"
                    );
                }
                tracing::info!(results = %out.display(), "results written");
                for (what, path) in extra {
                    tracing::info!(file = %path.display(), "{what} written");
                }
            }
            Style::Quiet => {}
        }
    }
}

/// "1 thread", "2 threads".
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}
