//! The seam between the epoch loop and whoever computes gradients: one local replica
//! ([`super::LocalEngine`]), or a cluster of workers behind the coordinator.

use super::TrainError;
use crate::pairs::Pair;
use crate::results::StepTiming;

/// Which official image set indices point into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageSplit {
    /// The official training file (train and validation images).
    Train,
    /// The official test file.
    Test,
}

/// The averaged result of one global batch.
#[derive(Clone, Debug)]
pub struct Contribution {
    /// Gradient of the mean loss over the whole batch.
    pub grad: Vec<f32>,
    /// Sum of per-pair losses.
    pub loss_sum: f64,
    /// Pairs classified correctly.
    pub correct: usize,
    /// Pairs in the batch.
    pub pairs: usize,
}

/// How an engine describes itself in the results file.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// Number of workers computing gradients.
    pub workers: usize,
    /// Their device.
    pub device: String,
    /// How gradients are combined.
    pub aggregation: String,
}

/// Computes gradients and embeddings for the epoch loop; the optimizer stays with the caller
/// unless [`Engine::replicas_step`] says the replicas step it themselves.
pub trait Engine {
    /// Who computes, for the results file.
    fn info(&self) -> EngineInfo;
    /// Loads these weights on every replica.
    fn set_weights(&mut self, weights: &[f32]) -> Result<(), TrainError>;
    /// The gradient of the mean loss over one global batch of pairs (indices into the train file).
    fn gradient(&mut self, batch: &[Pair]) -> Result<Contribution, TrainError>;
    /// Announces the batch that follows the current one, to be computed at the next weights, so
    /// that workers hold their next shard while the current step is being aggregated.
    fn prefetch(&mut self, _next: &[Pair]) -> Result<(), TrainError> {
        Ok(())
    }
    /// Whether the replicas step the optimizer themselves (allreduce, NCCL): the caller then
    /// keeps only the figures of each step and takes the weights from [`Engine::pull_weights`].
    fn replicas_step(&self) -> bool {
        false
    }
    /// The replicas' weights, checked to agree (engines whose replicas step themselves).
    fn pull_weights(&mut self) -> Result<Vec<f32>, TrainError> {
        Err(TrainError::Config(
            "this engine's replicas do not hold the optimizer".into(),
        ))
    }
    /// Subnet outputs for images of one split, row-major.
    fn embed(&mut self, split: ImageSplit, indices: &[u32]) -> Result<Vec<f32>, TrainError>;
    /// Step-time split accumulated so far.
    fn timing(&self) -> StepTiming;
}
