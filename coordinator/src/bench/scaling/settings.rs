//! The flags of `coordinator bench scaling`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use siamese_common::aggregation::Aggregation;
use siamese_common::config::within;
use siamese_common::data::DatasetKind;

/// Which scaling to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalingMode {
    /// Global batch fixed: each worker gets batch / N pairs.
    Strong,
    /// Batch per worker fixed: the global batch grows with N.
    Weak,
    /// Both.
    Both,
}

/// Settings of `coordinator bench scaling`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingArgs {
    /// Dataset to train on.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (same resolution as training).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Compute threads of each worker.
    #[arg(long, default_value_t = 1, value_parser = within(1usize, 1024))]
    pub threads: usize,
    /// Worker counts, comma-separated; 1 worker is always measured as the baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = within(1usize, 1024))]
    pub workers: Vec<usize>,
    /// Strong scaling, weak scaling, or both.
    #[arg(long, value_enum, default_value = "weak")]
    pub mode: ScalingMode,
    /// Pairs per worker per step (weak), or per step in all (strong).
    #[arg(long, default_value_t = 64, value_parser = within(1usize, 65_536))]
    pub batch_size: usize,
    /// Measured steps per run.
    #[arg(long, default_value_t = 100, value_parser = within(1usize, 1_000_000))]
    pub steps: usize,
    /// Steps run before measuring (thread start-up, page faults, first allocations).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Runs of every configuration, taken in alternation; figures are medians over them.
    #[arg(long, default_value_t = 3, value_parser = within(1usize, 1000))]
    pub repeats: usize,
    /// Send weights and gradients through gRPC instead of shared memory.
    #[arg(long)]
    pub no_shm: bool,
    /// Where gradients meet (as for training).
    #[arg(long, value_enum, default_value = "allreduce")]
    pub aggregation: Aggregation,
    /// JSON report; a CSV and a PNG plot are written beside it.
    #[arg(long, default_value = "results/scaling.json")]
    pub out: PathBuf,
}
