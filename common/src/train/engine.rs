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

/// Mean gradient of a batch from the summed-loss gradients of its shards: summed in f64 and
/// divided once, so every sharding of a batch gives the same result up to f64 rounding.
pub fn mean_gradient(shards: &[Vec<f32>], batch: usize) -> Vec<f32> {
    let mut sum = GradientSum::new(shards.first().map_or(0, Vec::len));
    for g in shards {
        // Non-finite values are the caller's to refuse; here they just propagate.
        let _ = sum.add(g);
    }
    sum.mean(batch)
}

fn first_non_finite(values: impl Iterator<Item = f32>) -> (usize, f32) {
    values
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .unwrap_or((0, f32::NAN))
}

/// A running f64 sum of shard gradients that checks each value as it adds it, so receiving a
/// gradient costs one pass over it instead of decode, check and sum.
pub struct GradientSum {
    total: Vec<f64>,
}

impl GradientSum {
    /// An empty sum of `n` values.
    pub fn new(n: usize) -> Self {
        GradientSum {
            total: vec![0.0; n],
        }
    }

    /// Adds a shard of the same length; `Err((i, v))` when value `i` is `v`, NaN or infinite.
    pub fn add(&mut self, g: &[f32]) -> Result<(), (usize, f32)> {
        let mut finite = true;
        for (t, v) in self.total.iter_mut().zip(g) {
            *t += f64::from(*v);
            finite &= v.is_finite();
        }
        match finite {
            true => Ok(()),
            false => Err(first_non_finite(g.iter().copied())),
        }
    }

    /// Adds a shard given as little-endian f32 bytes of the same length; `Err(i)` as in `add`.
    pub fn add_le_bytes(&mut self, bytes: &[u8]) -> Result<(), (usize, f32)> {
        let (chunks, _) = bytes.as_chunks::<4>();
        let mut finite = true;
        for (t, c) in self.total.iter_mut().zip(chunks) {
            let v = f32::from_le_bytes(*c);
            *t += f64::from(v);
            finite &= v.is_finite();
        }
        match finite {
            true => Ok(()),
            false => Err(first_non_finite(
                chunks.iter().map(|c| f32::from_le_bytes(*c)),
            )),
        }
    }

    /// The sum divided by the batch size.
    pub fn mean(self, batch: usize) -> Vec<f32> {
        let scale = 1.0 / batch.max(1) as f64;
        self.total.into_iter().map(|t| (t * scale) as f32).collect()
    }
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
        Err(TrainError::Engine(
            "this engine's replicas do not hold the optimizer".into(),
        ))
    }
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
    /// When the last gradient was handed out: the time until the next weights is aggregation.
    gradient_done: Option<Instant>,
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
            gradient_done: None,
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
        self.replica.set_weights(weights)?;
        if let Some(t) = self.gradient_done.take() {
            self.timing.aggregation_s += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    fn gradient(&mut self, batch: &[Pair]) -> Result<Contribution, TrainError> {
        let start = Instant::now();
        let step = self.replica.pair_gradient(
            &self.data.train,
            batch,
            crate::aggregation::tree::DEFAULT_MICRO_BATCH,
        )?;
        self.timing.compute_s += start.elapsed().as_secs_f64();
        let correct = step
            .similarity
            .iter()
            .zip(batch)
            .filter(|(s, p)| (**s > 0.5) == p.same)
            .count();
        let loss_sum = f64::from(step.loss_sum);
        let grad = mean_gradient(&[step.grad], batch.len());
        self.gradient_done = Some(Instant::now());
        Ok(Contribution {
            grad,
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
