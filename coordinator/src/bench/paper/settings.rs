//! The flags of `coordinator bench paper`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bench::BenchError;
use siamese_common::config::{PAPER_LR, at_least, learning_rate, within};
use siamese_common::data::{DatasetKind, resolve_data_dir};
use siamese_common::train::{Recipe, describe_parts};

/// Validation and test pairs kept with --quick (a test-pair prefix stays balanced).
pub const QUICK_PAIRS: usize = 1_000;

/// Settings of `coordinator bench paper`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaperArgs {
    /// Datasets to train (repeat the flag or separate with commas).
    #[arg(long = "dataset", value_enum, value_delimiter = ',', default_values = ["mnist", "fashion-mnist"])]
    pub datasets: Vec<DatasetKind>,
    /// Epochs of every training run; the default (six runs of 5 epochs at 1 thread) took 3.3
    /// minutes on a 2-core machine, so --epochs 20 still fits in about 30.
    #[arg(long, default_value_t = 5, conflicts_with = "full", value_parser = within(1usize, 100_000))]
    pub epochs: usize,
    /// The paper's budgets instead: 50, 100 and 1,500 epochs per dataset, 50 for the MNIST
    /// learning-rate and batch-size tables.
    #[arg(long)]
    pub full: bool,
    /// Folder holding one folder per dataset (`mnist/`, `fashion-mnist/`, `cifar10/`); default
    /// as for training ($SIAMESE_DATA_DIR, else ./data).
    #[arg(long)]
    pub data_dir_root: Option<PathBuf>,
    /// MNIST's folder (overrides --data-dir-root).
    #[arg(long)]
    pub mnist_dir: Option<PathBuf>,
    /// Fashion-MNIST's folder (overrides --data-dir-root).
    #[arg(long)]
    pub fashion_mnist_dir: Option<PathBuf>,
    /// CIFAR-10's folder, holding `cifar-10-batches-bin/` (overrides --data-dir-root); never
    /// downloaded here: CIFAR-10 is skipped when its files are absent.
    #[arg(long)]
    pub cifar10_dir: Option<PathBuf>,
    /// Compute threads of this process.
    #[arg(long, default_value_t = 1, value_parser = within(1usize, 1024))]
    pub threads: usize,
    /// Train on only the first N images of each training split (quick runs).
    #[arg(long, value_parser = at_least(2usize))]
    pub train_subset: Option<usize>,
    /// Score only 1,000 validation and 1,000 test pairs (smoke tests; test times then cover
    /// 1,000 pairs, not the paper's 10,000).
    #[arg(long)]
    pub quick: bool,
    /// Adam's learning rate of every run but the learning-rate table's, which tries the
    /// paper's three (default: the paper's 1e-3; finite, above 0, at most 10).
    #[arg(long, value_parser = learning_rate, allow_negative_numbers = true)]
    #[serde(default)]
    pub lr: Option<f64>,
    /// Seed of weights and training pairs, the same for every run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder for paper.json, paper.md, the PNG figures and each run's results in runs/.
    #[arg(long, default_value = "results/paper")]
    pub out: PathBuf,
    /// The training recipe of every run (the paper's unless these flags say otherwise); the
    /// tables name it beside the paper's figures.
    #[command(flatten)]
    #[serde(default)]
    pub recipe: Recipe,
}

impl PaperArgs {
    /// Epochs of the runs on `kind`.
    pub fn epochs_for(&self, kind: DatasetKind) -> usize {
        if self.full {
            kind.paper_epochs()
        } else {
            self.epochs
        }
    }

    /// The folder `kind` is read from.
    pub fn data_dir(&self, kind: DatasetKind) -> PathBuf {
        let own = match kind {
            DatasetKind::Mnist => &self.mnist_dir,
            DatasetKind::FashionMnist => &self.fashion_mnist_dir,
            DatasetKind::Cifar10 => &self.cifar10_dir,
        };
        match (own, &self.data_dir_root) {
            (Some(dir), _) => dir.clone(),
            (None, Some(root)) => root.join(kind.name()),
            (None, None) => resolve_data_dir(kind, None),
        }
    }

    /// The recipe in a few words, the learning rate first when --lr sets one ("paper" when
    /// every flag is the paper's).
    pub fn describe_recipe(&self) -> String {
        let mut parts: Vec<String> = self.lr.map(|lr| format!("lr {lr:e}")).into_iter().collect();
        parts.extend(self.recipe.parts());
        describe_parts(parts)
    }

    /// The learning rate of every run but the learning-rate table's.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(PAPER_LR)
    }

    pub(super) fn check(&mut self) -> Result<(), BenchError> {
        if self.datasets.is_empty() {
            return Err(BenchError::Config("--dataset names no dataset".into()));
        }
        self.recipe.check().map_err(BenchError::Config)?;
        // `--dataset mnist --dataset mnist` would train the same run twice.
        let mut seen = Vec::new();
        self.datasets.retain(|d| {
            let new = !seen.contains(d);
            seen.push(*d);
            new
        });
        Ok(())
    }
}
