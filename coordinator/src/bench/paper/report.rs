//! What `coordinator bench paper` writes, and its markdown tables with the paper's figures beside
//! ours ("n/a" where the paper gives none).

use serde::{Deserialize, Serialize};

use super::settings::{PaperArgs, QUICK_PAIRS};
use crate::bench::machine::machine;
use crate::bench::or_na;
use crate::bench::paper_figures::{
    PAPER_CLASSIFIERS, PAPER_LENET_TEST_TIME_S, PaperDataset, SENSITIVITY_DATASET,
};
use siamese_common::data::DatasetKind;
use siamese_common::results::RunResults;

/// One test pair drawn in the grid, with its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPair {
    /// Index of the first image in the test set.
    pub a: u32,
    /// Index of the second.
    pub b: u32,
    /// Their classes.
    pub labels: [u8; 2],
    /// Whether they share a class.
    pub same: bool,
    /// The model's similarity s.
    pub similarity: f32,
}

/// One dataset trained at the chosen budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRun {
    /// Which dataset.
    pub dataset: DatasetKind,
    /// Where its files were read from.
    pub data_dir: String,
    /// Training images used (the training split, or --train-subset of it).
    pub train_images: usize,
    /// Validation pairs scored each epoch.
    pub val_pairs: usize,
    /// Median seconds of a training epoch.
    pub seconds_per_epoch: f64,
    /// The run's full results (the results file of docs/spec.md).
    pub results: RunResults,
    /// The test pairs of the grid figure.
    pub grid: Vec<GridPair>,
    /// Training-curve PNG.
    pub curves_png: String,
    /// Pair-grid PNG.
    pub pairs_png: String,
    /// The paper's figures for this dataset.
    pub paper: PaperDataset,
}

/// A dataset that could not run, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Which dataset (or table).
    pub what: String,
    /// Why, in words.
    pub reason: String,
}

/// One row of the learning-rate or batch-size table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// Adam learning rate.
    pub lr: f64,
    /// Pairs per batch.
    pub batch_size: u32,
    /// Epochs run.
    pub epochs: usize,
    /// Training pair accuracy of the last epoch.
    pub train_accuracy: f64,
    /// Validation pair accuracy of the last epoch.
    pub val_accuracy: f64,
    /// Test pair accuracy.
    pub test_accuracy: f64,
    /// Median training seconds per epoch.
    pub seconds_per_epoch: f64,
    /// The paper's training accuracy for this setting.
    pub paper_train_accuracy: f64,
    /// The paper's seconds per epoch (batch table only).
    pub paper_seconds_per_epoch: Option<f64>,
    /// The run's results file (rows at the paper's defaults share the dataset table's run).
    pub results_file: String,
}

/// What `bench paper` writes: every figure of its tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaperReport {
    /// The machine, as /proc/cpuinfo names it, and its cores.
    pub machine: String,
    /// The settings, defaults filled in.
    pub args: PaperArgs,
    /// The budget that ran, in words (also the tables' header).
    pub budget: String,
    /// One entry per dataset trained.
    pub datasets: Vec<DatasetRun>,
    /// Datasets or tables that did not run.
    pub skipped: Vec<Skipped>,
    /// Learning rates 1e-4, 1e-3, 1e-2 (empty when skipped).
    pub lr_table: Vec<SensitivityRow>,
    /// Batch sizes 32, 64, 96 (empty when skipped).
    pub batch_table: Vec<SensitivityRow>,
    /// Wall-clock seconds of the whole command.
    pub total_seconds: f64,
}

/// The datasets' budget in words, the first line of the printed tables.
pub fn budget(args: &PaperArgs, runs: usize, seconds: f64) -> String {
    let epochs: Vec<String> = args
        .datasets
        .iter()
        .map(|&k| format!("{} {}", k.name(), args.epochs_for(k)))
        .collect();
    let train = match args.train_subset {
        Some(n) => format!("the first {n} images of each training split"),
        None => "the full training splits (48,000 / 40,000 pairs per epoch)".into(),
    };
    let lr = args.lr();
    let pairs = match args.quick {
        true => format!("{QUICK_PAIRS} validation and {QUICK_PAIRS} test pairs (--quick)"),
        false => "all validation pairs and the 10,000 test pairs".into(),
    };
    format!(
        "## SN-LeNet-5 against the paper\n\nBudget: epochs per run {} (paper: mnist 50, fashion-mnist 100, \
         cifar10 1,500; --full runs those); {train}; {pairs}; batch 64, lr {lr:e} unless the table \
         varies them; seed {}; {} thread(s) on CPU ({}); {runs} training run(s) in {:.1} min. \
         Accuracies are pair accuracies; the paper's times are TensorFlow + CUDA on its authors' \
         desktop.",
        epochs.join(", "),
        args.seed,
        args.threads,
        machine(),
        seconds / 60.0
    )
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// A dataset's display name as the paper writes it.
pub fn display_name(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Mnist => "MNIST",
        DatasetKind::FashionMnist => "Fashion-MNIST",
        DatasetKind::Cifar10 => "CIFAR-10",
    }
}

/// The final epoch's (train, val) accuracy, zero for a run without epochs.
fn last_accuracies(r: &RunResults) -> (f64, f64) {
    r.epochs
        .last()
        .map_or((0.0, 0.0), |e| (e.train_accuracy, e.val_accuracy))
}

/// ", tested after epoch N" where the tested weights are not the last epoch's.
fn tested_epoch(r: &RunResults) -> String {
    let last = r.epochs.last().map_or(0, |e| e.epoch);
    match r.selection.epoch {
        e if e != last && e > 0 => format!(", tested after {e}"),
        _ => String::new(),
    }
}

/// All tables as markdown, headed by the budget that ran.
pub fn paper_tables(r: &PaperReport) -> String {
    let mut s = format!("{}\n\n", r.budget);
    s.push_str(&format!(
        "Recipe: {} (docs/spec.md 3.4); the test column is of the weights `selection` names.\n\n",
        r.args.describe_recipe()
    ));
    s.push_str("### Accuracy per dataset (pair accuracy, %; ours / paper)\n\n");
    s.push_str("| dataset | epochs (paper) | train | paper train | val | paper val | test | paper test | ROC AUC | nearest-class-mean | s/epoch | paper s/epoch |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for d in &r.datasets {
        let (train, val) = last_accuracies(&d.results);
        let p = &d.paper;
        s.push_str(&format!(
            "| {} | {}{} ({}) | {} | {} | {} | {} | {} | {} | {:.4} | {} | {:.2} | {:.2} |\n",
            display_name(d.dataset),
            d.results.epochs.len(),
            tested_epoch(&d.results),
            p.epochs,
            pct(train),
            pct(p.train_accuracy),
            pct(val),
            pct(p.val_accuracy),
            pct(d.results.test.pair_accuracy),
            pct(p.test_accuracy),
            d.results.test.roc_auc,
            pct(d.results.test.ncm_accuracy),
            d.seconds_per_epoch,
            p.seconds_per_epoch,
        ));
    }
    s.push_str("\n### Test time (scoring the test pairs after one warm-up pass)\n\n");
    s.push_str("| dataset | model | test pairs | images | time s | images/s | paper: time s, 10,000 images |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for d in &r.datasets {
        let t = &d.results.test;
        s.push_str(&format!(
            "| {} | SN-LeNet-5 | {} | {:.0} | {:.3} | {:.0} | {:.2} |\n",
            display_name(d.dataset),
            t.pairs,
            t.images_per_s * t.time_s,
            t.time_s,
            t.images_per_s,
            d.paper.test_time_s,
        ));
        if d.dataset == DatasetKind::Mnist {
            s.push_str(&format!(
                "| MNIST | LeNet-5 (not run here: `coordinator bench test-time`) | n/a | n/a | n/a | n/a | {PAPER_LENET_TEST_TIME_S:.2} |\n"
            ));
        }
    }
    let on = display_name(SENSITIVITY_DATASET);
    s.push_str(&format!(
        "\n### Learning rate ({on}, batch 64; accuracy %)\n\n"
    ));
    s.push_str(
        "| learning rate | epochs | train | paper train | val | test | s/epoch | paper s/epoch |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for x in &r.lr_table {
        s.push_str(&sensitivity_line(&format!("{:.0e}", x.lr), x));
    }
    s.push_str(&format!(
        "\n### Batch size ({on}, learning rate {:e}; accuracy %)\n\n",
        r.args.lr()
    ));
    s.push_str("| batch | epochs | train | paper train | val | test | s/epoch | paper s/epoch |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for x in &r.batch_table {
        s.push_str(&sensitivity_line(&x.batch_size.to_string(), x));
    }
    if let Some(m) = r.datasets.iter().find(|d| d.dataset == DatasetKind::Mnist) {
        s.push_str("\n### MNIST classifiers (test accuracy %; only SN-LeNet-5 runs here)\n\n");
        s.push_str("| method | ours | paper |\n|---|---|---|\n");
        for (name, paper) in PAPER_CLASSIFIERS {
            let ours = match name {
                "SN-LeNet-5" => format!(
                    "{} pairs ({} nearest-class-mean per image)",
                    pct(m.results.test.pair_accuracy),
                    pct(m.results.test.ncm_accuracy)
                ),
                _ => "n/a".into(),
            };
            s.push_str(&format!("| {name} | {ours} | {} |\n", pct(paper)));
        }
    }
    for x in &r.skipped {
        s.push_str(&format!("\nskipped {}: {}\n", x.what, x.reason));
    }
    s
}

fn sensitivity_line(setting: &str, x: &SensitivityRow) -> String {
    format!(
        "| {setting} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
        x.epochs,
        pct(x.train_accuracy),
        pct(x.paper_train_accuracy),
        pct(x.val_accuracy),
        pct(x.test_accuracy),
        x.seconds_per_epoch,
        or_na(x.paper_seconds_per_epoch, |v| format!("{v:.2}")),
    )
}
