//! The flags of `coordinator bench test-time`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use siamese_common::config::{at_least, within};
use siamese_common::data::DatasetKind;

/// Settings of `coordinator bench test-time`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestTimeArgs {
    /// Dataset of both models.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (same resolution as training).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// SN-LeNet-5 weights to time instead of training them here: the `.safetensors` file a
    /// training run writes beside its results.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Embedding width of the SN-LeNet-5 (must match --checkpoint).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub embedding: u32,
    /// Compute threads of this process, for training and timing both models.
    #[arg(long, default_value_t = 1, value_parser = within(1usize, 1024))]
    pub threads: usize,
    /// Training epochs of each model (of the classifier only, with --checkpoint).
    #[arg(long, default_value_t = 2, value_parser = within(1usize, 100_000))]
    pub epochs: usize,
    /// Timed passes of each model after one warm-up pass, taken in alternation; the times are
    /// their medians.
    #[arg(long, default_value_t = 5, value_parser = within(1usize, 1000))]
    pub repeats: usize,
    /// Seed of both models' initial weights and training order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on only the first N images of the training split (quick runs); the test set is
    /// always whole.
    #[arg(long, value_parser = at_least(2usize))]
    pub train_subset: Option<usize>,
    /// JSON report; default results/test-time-<dataset>.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write every test pair's indices, label and similarity as CSV to this file.
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

impl TestTimeArgs {
    /// Report path with the default filled in.
    pub fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("results/test-time-{}.json", self.dataset.name()))
        })
    }
}
