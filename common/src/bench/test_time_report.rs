//! What `bench test-time` prints and writes: the markdown table beside the paper's figures and
//! the JSON report.

use super::stats::Spread;
use super::test_time::{CLASSIFIER_MODEL, PaperFigures, SN_MODEL, TestTimeReport, TimedRow};
use super::{io_error, or_na};
use crate::train::TrainError;

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
pub(super) fn write_report(r: &TestTimeReport) -> Result<(), TrainError> {
    let out = r.args.out_path();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let json = serde_json::to_vec_pretty(r).map_err(|e| TrainError::Engine(e.to_string()))?;
    std::fs::write(&out, json).map_err(io_error(&out))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
