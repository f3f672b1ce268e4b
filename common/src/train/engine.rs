//! The seam between the epoch loop and whoever computes gradients: one local replica, or a
//! cluster of workers behind the coordinator.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use super::{Replica, TrainError};
use crate::data::Dataset;
use crate::model::ModelSpec;
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

/// Computes gradients and embeddings for the epoch loop; the optimizer stays with the caller.
pub trait Engine {
    /// Who computes, for the results file.
    fn info(&self) -> EngineInfo;
    /// Loads these weights on every replica.
    fn set_weights(&mut self, weights: &[f32]) -> Result<(), TrainError>;
    /// The gradient of the mean loss over one global batch of pairs (indices into the train file).
    fn gradient(&mut self, batch: &[Pair]) -> Result<Contribution, TrainError>;
    /// Subnet outputs for images of one split, row-major.
    fn embed(&mut self, split: ImageSplit, indices: &[u32]) -> Result<Vec<f32>, TrainError>;
    /// Step-time split accumulated so far.
    fn timing(&self) -> StepTiming;
}

/// The whole batch on one in-process replica.
pub struct LocalEngine {
    replica: Replica,
    data: Arc<Dataset>,
    timing: StepTiming,
}

impl LocalEngine {
    /// A local engine on `device`.
    pub fn new(
        spec: ModelSpec,
        weights: &[f32],
        data: Arc<Dataset>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        Ok(LocalEngine {
            replica: Replica::new(spec, weights, device)?,
            data,
            timing: StepTiming::default(),
        })
    }
}

impl Engine for LocalEngine {
    fn info(&self) -> EngineInfo {
        let device = match self.replica.network().device() {
            Device::Cpu => "cpu".to_string(),
            other => format!("{:?}", other.location()).to_lowercase(),
        };
        EngineInfo {
            workers: 1,
            device,
            aggregation: "local".into(),
        }
    }

    fn set_weights(&mut self, weights: &[f32]) -> Result<(), TrainError> {
        self.replica.set_weights(weights)
    }

    fn gradient(&mut self, batch: &[Pair]) -> Result<Contribution, TrainError> {
        let start = Instant::now();
        let step = self.replica.pair_gradient(&self.data.train, batch)?;
        self.timing.compute_s += start.elapsed().as_secs_f64();
        let correct = step
            .similarity
            .iter()
            .zip(batch)
            .filter(|(s, p)| (**s > 0.5) == p.same)
            .count();
        let loss_sum = f64::from(step.loss) * batch.len() as f64;
        Ok(Contribution {
            grad: step.grad,
            loss_sum,
            correct,
            pairs: batch.len(),
        })
    }

    fn embed(&mut self, split: ImageSplit, indices: &[u32]) -> Result<Vec<f32>, TrainError> {
        let images = match split {
            ImageSplit::Train => &self.data.train,
            ImageSplit::Test => &self.data.test,
        };
        self.replica.embed(images, indices)
    }

    fn timing(&self) -> StepTiming {
        self.timing.clone()
    }
}
