//! The seam between the epoch loop and whoever computes gradients: one local replica
//! ([`super::LocalEngine`]), or a cluster of workers behind the coordinator.

use super::TrainError;
use crate::aggregation::OptimizerState;
use crate::data::TestAugment;
use crate::pairs::Pair;
use crate::results::{MembershipEvent, StepTiming};

/// Which official image set indices point into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageSplit {
    /// The official training file (train and validation images).
    Train,
    /// The official test file.
    Test,
}

/// The result of one global batch.
#[derive(Clone, Debug)]
pub struct Contribution {
    /// Gradient of the mean loss over the whole batch; `None` where the replicas reduced it
    /// among themselves and stepped (NCCL).
    pub grad: Option<Vec<f32>>,
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

/// Computes gradients and embeddings for the epoch loop. The trainer holds the run's state and
/// applies each step's mean to it; the engine keeps its replicas in step with it.
pub trait Engine {
    /// Who computes, for the results file.
    fn info(&self) -> EngineInfo;
    /// Loads `state` on every replica (its weights, and Adam's state where replicas step it).
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), TrainError>;
    /// The gradient of the mean loss over one global batch of pairs (indices into the train
    /// file), computed at `state`'s weights.
    fn gradient(
        &mut self,
        batch: &[Pair],
        state: &OptimizerState,
    ) -> Result<Contribution, TrainError>;
    /// Announces, before [`Engine::gradient`] of the current batch, the batch that follows it,
    /// to be computed at the next weights: a cluster sends its tasks with the step's mean or
    /// weights, one message a worker a step.
    fn prefetch(&mut self, _next: &[Pair]) -> Result<(), TrainError> {
        Ok(())
    }
    /// The trainer applied the step's mean to `state`: replicas that do not step Adam
    /// themselves get its weights.
    fn stepped(&mut self, state: &OptimizerState) -> Result<(), TrainError>;
    /// The replicas' state, checked to agree, for engines whose replicas alone step it (NCCL).
    fn pull_state(&mut self) -> Result<Option<OptimizerState>, TrainError> {
        Ok(None)
    }
    /// Subnet outputs for images of one split, row-major, at `state`'s weights (which the
    /// replicas hold), each image seen as `views` says.
    fn embed(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
        state: &OptimizerState,
        views: TestAugment,
    ) -> Result<Vec<f32>, TrainError>;
    /// Step-time split accumulated so far.
    fn timing(&self) -> StepTiming;
    /// Forms the replicas' group again and loads `state` on all of them, after
    /// [`super::TrainError::Regroup`].
    fn regroup(&mut self, _state: &OptimizerState) -> Result<(), TrainError> {
        Err(TrainError::Config(
            "this engine's replicas cannot form their group again".into(),
        ))
    }
    /// Workers that joined or were lost, in order.
    fn membership(&self) -> Vec<MembershipEvent> {
        Vec::new()
    }
}
