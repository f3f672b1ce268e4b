//! Training: the per-replica step, the engine seam the cluster plugs into, evaluation and the
//! epoch loop; and the plain LeNet-5 classifier the paper compares SN-LeNet-5 with.

pub mod classifier;
pub mod engine;
pub mod eval;
pub mod replica;
pub mod trainer;

use std::path::PathBuf;

pub use classifier::{ClassEpoch, ClassifierConfig, ClassifierTrainer};
pub use engine::{
    Contribution, Engine, EngineInfo, GradientSum, ImageSplit, LocalEngine, mean_gradient,
};
pub use replica::Replica;
pub use trainer::{TimedSteps, Trainer, TrainingData};

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Pairs could not be drawn.
    #[error("drawing pairs: {0}")]
    Pairs(#[from] crate::pairs::PairError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A gradient held NaN or Inf; the step was not applied.
    #[error(
        "non-finite gradient at epoch {epoch}, step {step} (from {source_name}); the step was not applied"
    )]
    NonFinite {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (0-based).
        step: usize,
        /// Who produced it (a worker, or the local replica).
        source_name: String,
    },
    /// The configuration does not describe a runnable job.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine (e.g. the cluster) failed.
    #[error("{0}")]
    Engine(String),
    /// A results or checkpoint file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
