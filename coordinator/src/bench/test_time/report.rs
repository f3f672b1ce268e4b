//! What `bench test-time` prints and writes: the markdown table beside the paper's figures and
//! the JSON report.

use serde::{Deserialize, Serialize};

use super::settings::TestTimeArgs;
use crate::bench::BenchError;
use crate::bench::files::write_json;
use crate::bench::or_na;
use crate::bench::paper_figures::PaperFigures;
use crate::bench::stats::Spread;
use siamese_common::results::{EpochRecord, TestRecord};
use siamese_common::train::ClassEpoch;

/// Name of the siamese model in the report.
pub const SN_MODEL: &str = "SN-LeNet-5";
/// Name of the classifier in the report.
pub const CLASSIFIER_MODEL: &str = "LeNet-5";

/// One model's row of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedRow {
    /// `SN-LeNet-5` or `LeNet-5`.
    pub model: String,
    /// What was timed.
    pub task: String,
    /// Test pairs scored, or test images classified.
    pub items: usize,
    /// Distinct images that went through the network.
    pub images: usize,
    /// Median seconds of a timed pass.
    pub time_s: f64,
    /// Spread of the timed passes.
    pub time_spread: Spread,
    /// Items per second at the median.
    pub items_per_s: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Pair accuracy (SN-LeNet-5) or classification accuracy (LeNet-5).
    pub test_accuracy: f64,
    /// The paper's figures for this model and dataset.
    pub paper: PaperFigures,
}

/// What `bench test-time` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestTimeReport {
    /// The machine, as /proc/cpuinfo names it, and its cores.
    pub machine: String,
    /// Where both models ran.
    pub device: String,
    /// The settings, with the output path filled in.
    pub args: TestTimeArgs,
    /// Where the SN-LeNet-5 weights came from.
    pub sn_weights: String,
    /// SN-LeNet-5 training epochs run here (none with --checkpoint).
    pub sn_epochs: Vec<EpochRecord>,
    /// Classifier training epochs.
    pub classifier_epochs: Vec<ClassEpoch>,
    /// SN-LeNet-5's full test figures (ROC AUC, nearest-class-mean accuracy), from its warm-up.
    pub sn_test: TestRecord,
    /// SN-LeNet-5's row, then the classifier's.
    pub rows: Vec<TimedRow>,
}

/// A row's timing figures, accuracy and paper figures still to fill in.
pub(super) fn row(model: &str, task: &str, items: usize, images: usize, times: &[f64]) -> TimedRow {
    let spread = Spread::of(times);
    let per_s = |n: usize| n as f64 / spread.median.max(1e-9);
    TimedRow {
        model: model.into(),
        task: task.into(),
        items,
        images,
        time_s: spread.median,
        time_spread: spread,
        items_per_s: per_s(items),
        images_per_s: per_s(images),
        test_accuracy: 0.0,
        paper: PaperFigures::default(),
    }
}

impl TimedRow {
    pub(super) fn with(self, test_accuracy: f64, paper: PaperFigures) -> Self {
        TimedRow {
            test_accuracy,
            paper,
            ..self
        }
    }
}

/// The report as a markdown table, with the paper's figures beside ours.
pub fn test_time_table(r: &TestTimeReport) -> String {
    let mut s = format!(
        "{} test set on {} ({}), {} thread(s); median of {} timed passes after one warm-up, \
         images in batches of 512\n{SN_MODEL} weights {}; {CLASSIFIER_MODEL} trained here for {} epoch(s)\n\n",
        r.args.dataset.name(),
        r.device,
        r.machine,
        r.args.threads,
        r.args.repeats,
        r.sn_weights,
        r.classifier_epochs.len()
    );
    s.push_str("| model | task | items | time s (range) | items/s | images/s | test accuracy % | paper: time s | paper: accuracy % |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} ({:.3}-{:.3}) | {:.0} | {:.0} | {:.2} | {} | {} |\n",
            x.model,
            x.task,
            x.items,
            x.time_s,
            x.time_spread.min,
            x.time_spread.max,
            x.items_per_s,
            x.images_per_s,
            100.0 * x.test_accuracy,
            or_na(x.paper.time_s, |v| format!("{v:.2}")),
            or_na(x.paper.accuracy, |v| format!("{:.2}", 100.0 * v)),
        ));
    }
    s.push_str(&format!(
        "\n{SN_MODEL} also: ROC AUC {:.4}, nearest-class-mean accuracy {:.2}% (per image, comparable \
         to the classifier's). The paper's times are TensorFlow + CUDA on its authors' desktop.\n",
        r.sn_test.roc_auc,
        100.0 * r.sn_test.ncm_accuracy
    ));
    s
}

/// Writes the JSON report, creating its folder.
pub(super) fn write_report(r: &TestTimeReport) -> Result<(), BenchError> {
    let out = r.args.out_path();
    write_json(&out, r)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
