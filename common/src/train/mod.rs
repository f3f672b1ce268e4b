//! Training: the per-replica step, the engine seam the cluster plugs into, evaluation, the
//! epoch loop and the in-process run; and the plain LeNet-5 classifier the paper compares
//! SN-LeNet-5 with.

pub mod checkpoint;
pub mod classifier;
pub mod engine;
pub mod eval;
mod in_process;
mod local_engine;
pub mod noise;
pub mod observer;
pub mod output_files;
pub mod recipe;
pub mod replica;
mod run_identity;
pub mod trainer;
pub mod training_data;
pub mod weight_average;

use std::path::PathBuf;

pub use checkpoint::{BestWeights, Checkpoint, CheckpointError, EpochProgress, Position};
pub use classifier::{ClassEpoch, ClassifierConfig, ClassifierTrainer};
pub use engine::{Contribution, Engine, EngineInfo, ImageSplit};
pub use in_process::train_in_process;
pub use local_engine::LocalEngine;
pub use noise::Noise;
pub use observer::{NoObserver, Observers, OnEpoch, RunObserver, RunPlan, StepReport, TestScores};
pub use recipe::{Recipe, Selection, describe_parts};
pub use replica::Replica;
pub use run_identity::RunIdentity;
pub use trainer::{RunControl, TimedSteps, Trainer};
pub use training_data::TrainingData;
pub use weight_average::WeightAverage;

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
    /// A step's mean gradient could not be applied (NaN, Inf, wrong length); it was not.
    #[error(
        "the mean gradient of epoch {epoch}, step {step} was refused: {source}; the step was not applied"
    )]
    Aggregation {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (0-based).
        step: usize,
        /// What is wrong with it.
        source: crate::aggregation::AggregationError,
    },
    /// A batch's block gradients did not sum by the tree.
    #[error("summing the batch's block gradients: {0}")]
    Tree(#[from] crate::aggregation::tree::TreeError),
    /// The configuration does not describe a runnable job.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine (e.g. the cluster) failed.
    #[error(transparent)]
    Engine(Box<dyn std::error::Error + Send + Sync>),
    /// The compute thread pool could not start.
    #[error("starting the compute thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A checkpoint could not be written, read or used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The engine's replicas lost step with each other (an NCCL rank was lost): they must
    /// all go back to the last saved state and form their group again.
    #[error("{0}")]
    Regroup(String),
    /// The run was asked to stop (SIGINT or SIGTERM) before it finished; the checkpoint holds
    /// its state.
    #[error("interrupted; the checkpoint holds the run's state (continue with --resume auto)")]
    Interrupted,
    /// A results or checkpoint file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
