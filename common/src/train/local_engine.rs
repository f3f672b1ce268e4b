//! The engine of a run in this process: the whole batch on one local replica.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use super::engine::{Contribution, Engine, EngineInfo, ImageSplit};
use super::{Replica, TrainError};
use crate::aggregation::tree::{MicroBatches, combine};
use crate::aggregation::{OptimizerState, mean_of_sum};
use crate::data::{Dataset, TestAugment};
use crate::model::ModelSpec;
use crate::pairs::Pair;
use crate::results::StepTiming;

/// What one batch's blocks add up to.
#[derive(Default)]
struct BatchSums {
    loss_sum: f64,
    similarity: Vec<f32>,
    grad: Vec<f32>,
}

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
    /// The batch's summed loss, similarities and tree-summed gradient, computed block by block
    /// ([`MicroBatches::bounded_blocks`]) as a cluster's workers do, so that memory does not grow
    /// with the batch (976 MB at 16,384 pairs in one call) and the bytes equal a cluster's.
    fn block_sums(&mut self, batch: &[Pair]) -> Result<BatchSums, TrainError> {
        let micro = MicroBatches::or_whole(batch.len(), self.micro_batch);
        let leaves = micro.leaves();
        let mut sums = BatchSums::default();
        let mut parts = Vec::new();
        for block in micro.bounded_blocks(0..leaves) {
            let pairs = &batch[micro.pair_range(block.clone())];
            let step = self
                .replica
                .pair_gradient(&self.data.train, pairs, self.micro_batch)?;
            sums.loss_sum += f64::from(step.loss_sum);
            sums.similarity.extend_from_slice(&step.similarity);
            parts.push((block, step.grad));
        }
        sums.grad = combine(leaves, parts)?;
        Ok(sums)
    }

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
        let step = self.block_sums(batch)?;
        self.timing.compute_s += start.elapsed().as_secs_f64();
        let correct = step
            .similarity
            .iter()
            .zip(batch)
            .filter(|(s, p)| (**s > 0.5) == p.same)
            .count();
        let grad = mean_of_sum(&step.grad, batch.len());
        self.gradient_done = Some(Instant::now());
        Ok(Contribution {
            grad: Some(grad),
            loss_sum: step.loss_sum,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::model::Head;
    use crate::train::replica::tests::digits;

    /// A batch cut into bounded blocks sums into the bits of one call over the whole batch, for
    /// micro-batch sizes that divide the block bound, one that does not and one above it; with
    /// micro-batches of 8 the five blocks' tree order differs from adding them one by one.
    #[test]
    fn blocks_sum_into_the_bits_of_one_call() {
        let set = digits(64);
        let data = Arc::new(Dataset {
            kind: DatasetKind::Mnist,
            train: set.clone(),
            test: set.clone(),
        });
        let spec = ModelSpec {
            channels: 1,
            size: 28,
            head: Head::Siamese { width: 10 },
        };
        let weights = spec.init(5);
        let batch: Vec<Pair> = (0..600u32)
            .map(|i| Pair {
                a: i % 64,
                b: (i * 7 + 3) % 64,
                same: i % 3 == 0,
            })
            .collect();
        for per in [8, 3, 200] {
            let mut engine =
                LocalEngine::new(spec, &weights, data.clone(), &Device::Cpu, per).unwrap();
            let blocks = MicroBatches::new(batch.len(), per)
                .unwrap()
                .bounded_blocks(0..batch.len().div_ceil(per));
            assert!(blocks.len() > 1, "micro-batch {per}: the batch must be cut");
            let cut = engine.block_sums(&batch).unwrap();
            let mut whole = Replica::new(spec, &weights, &Device::Cpu).unwrap();
            let one = whole.pair_gradient(&set, &batch, per).unwrap();
            let differ = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                a.iter()
                    .zip(b)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count()
            };
            assert_eq!(
                differ(&cut.grad, &one.grad),
                0,
                "micro-batch {per}: gradient"
            );
            assert_eq!(
                differ(&cut.similarity, &one.similarity),
                0,
                "micro-batch {per}"
            );
            let loss = f64::from(one.loss_sum);
            assert!((cut.loss_sum - loss).abs() <= 1e-5 * loss.abs());
        }
    }
}
