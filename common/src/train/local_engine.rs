//! The engine of a run in this process: the whole batch on one local replica.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use super::engine::{Contribution, Engine, EngineInfo, ImageSplit};
use super::{Replica, TrainError};
use crate::aggregation::{OptimizerState, mean_of_sum};
use crate::data::{Dataset, TestAugment};
use crate::model::ModelSpec;
use crate::pairs::Pair;
use crate::results::StepTiming;

/// The whole batch on one in-process replica.
pub struct LocalEngine {
    replica: Replica,
    data: Arc<Dataset>,
    /// Pairs per micro-batch of the summation tree.
    micro_batch: usize,
    timing: StepTiming,
    /// When the last gradient was handed out: the time until the next weights is aggregation.
    gradient_done: Option<Instant>,
}

impl LocalEngine {
    /// A local engine on `device`, summing gradients by micro-batches of `micro_batch` pairs.
    pub fn new(
        spec: ModelSpec,
        weights: &[f32],
        data: Arc<Dataset>,
        device: &Device,
        micro_batch: usize,
    ) -> Result<Self, TrainError> {
        Ok(LocalEngine {
            replica: Replica::new(spec, weights, device)?,
            data,
            micro_batch,
            timing: StepTiming::default(),
            gradient_done: None,
        })
    }
}

impl LocalEngine {
    /// Draws `noise` (augmentation, dropout) in every training step.
    pub fn with_noise(mut self, noise: super::Noise) -> Self {
        self.replica.set_noise(noise);
        self
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

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        self.replica.set_weights(&state.params)
    }

    fn stepped(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        self.replica.set_weights(&state.params)?;
        if let Some(t) = self.gradient_done.take() {
            self.timing.aggregation_s += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    fn gradient(
        &mut self,
        batch: &[Pair],
        _state: &OptimizerState,
    ) -> Result<Contribution, TrainError> {
        let start = Instant::now();
        // One call over the whole batch sums it by the same tree a cluster's workers and
        // coordinator do together, so the bytes are the same.
        let step = self
            .replica
            .pair_gradient(&self.data.train, batch, self.micro_batch)?;
        self.timing.compute_s += start.elapsed().as_secs_f64();
        let correct = step
            .similarity
            .iter()
            .zip(batch)
            .filter(|(s, p)| (**s > 0.5) == p.same)
            .count();
        let loss_sum = f64::from(step.loss_sum);
        let grad = mean_of_sum(&step.grad, batch.len());
        self.gradient_done = Some(Instant::now());
        Ok(Contribution {
            grad: Some(grad),
            loss_sum,
            correct,
            pairs: batch.len(),
        })
    }

    fn embed(
        &mut self,
        split: ImageSplit,
        indices: &[u32],
        _state: &OptimizerState,
        views: TestAugment,
    ) -> Result<Vec<f32>, TrainError> {
        let images = match split {
            ImageSplit::Train => &self.data.train,
            ImageSplit::Test => &self.data.test,
        };
        self.replica.embed(images, indices, views)
    }

    fn timing(&self) -> StepTiming {
        self.timing.clone()
    }
}
