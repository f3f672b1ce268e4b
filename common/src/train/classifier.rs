//! The plain LeNet-5 classifier of the paper's comparison table: softmax over ten classes,
//! trained with cross-entropy by the same replica, data path and Adam as SN-LeNet-5, on the same
//! training split.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{Replica, TrainError};
use crate::aggregation::{OptimizerState, mean_of_sum};
use crate::data::{Dataset, ImageSet, TestAugment};
use crate::model::ModelSpec;
use crate::pairs::PairRng;

/// Mixed into the run seed for the classifier's image order, so that it is not the same random
/// stream as the siamese training pairs of that seed.
const ORDER_KEY: u64 = 0xC1A5_51F1_E500_0001;

/// Settings of a classifier run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initial weights and of each epoch's image order.
    pub seed: u64,
}

impl Default for ClassifierConfig {
    /// The siamese defaults of the paper's Table 2 (batch 64, lr 1e-3), for a fair comparison.
    fn default() -> Self {
        ClassifierConfig {
            epochs: 2,
            batch_size: 64,
            lr: 1e-3,
            seed: 1,
        }
    }
}

/// Figures of one classifier epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassEpoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's images (as computed during the epoch).
    pub train_loss: f64,
    /// Fraction of the epoch's images classified correctly while training.
    pub train_accuracy: f64,
    /// Accuracy on the validation split at the end of the epoch.
    pub val_accuracy: f64,
    /// Training seconds, evaluation excluded.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_s: f64,
}

/// The classifier's parameters, Adam state and replica, over one dataset's split.
pub struct ClassifierTrainer {
    cfg: ClassifierConfig,
    dataset: Arc<Dataset>,
    train_pool: Vec<u32>,
    val_pool: Vec<u32>,
    state: OptimizerState,
    replica: Replica,
}

impl ClassifierTrainer {
    /// A classifier for `dataset` at its seeded initial weights, trained on `train_pool` and
    /// validated on `val_pool` (indices into the training file).
    pub fn new(
        cfg: ClassifierConfig,
        dataset: Arc<Dataset>,
        train_pool: Vec<u32>,
        val_pool: Vec<u32>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        if cfg.batch_size == 0 {
            return Err(TrainError::Config(
                "the classifier's batch size must be at least 1".into(),
            ));
        }
        if train_pool.is_empty() {
            return Err(TrainError::Config(
                "the classifier has no training images".into(),
            ));
        }
        let spec = ModelSpec::classifier(dataset.kind);
        let state = OptimizerState::new(spec.init(cfg.seed), cfg.lr);
        let replica = Replica::new(spec, &state.params, device)?;
        Ok(ClassifierTrainer {
            cfg,
            dataset,
            train_pool,
            val_pool,
            state,
            replica,
        })
    }

    /// The model layout.
    pub fn spec(&self) -> ModelSpec {
        *self.replica.network().spec()
    }

    /// Current parameters.
    pub fn params(&self) -> &[f32] {
        &self.state.params
    }

    /// The replica holding the current parameters, to classify with.
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Trains one epoch over the training split in a seeded order; returns its figures.
    pub fn epoch(&mut self, epoch: usize) -> Result<ClassEpoch, TrainError> {
        let mut order = self.train_pool.clone();
        PairRng::new(self.cfg.seed ^ ORDER_KEY, epoch as u64).shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let start = Instant::now();
        for (step, batch) in order.chunks(self.cfg.batch_size).enumerate() {
            let s = self.replica.class_gradient(&self.dataset.train, batch)?;
            // The gradient of the mean loss, as the siamese engines hand it to Adam.
            let grad = mean_of_sum(&s.grad, batch.len());
            self.state
                .apply(&grad)
                .map_err(|source| TrainError::Aggregation {
                    epoch,
                    step,
                    source,
                })?;
            self.replica.set_weights(&self.state.params)?;
            loss_sum += f64::from(s.loss_sum);
            correct += s.correct;
        }
        let seconds = start.elapsed().as_secs_f64();
        let seen = order.len();
        let val_accuracy = if self.val_pool.is_empty() {
            0.0
        } else {
            let train = &self.dataset.train;
            let predicted = classify(&mut self.replica, train, &self.val_pool)?;
            accuracy(&predicted, train, &self.val_pool)
        };
        Ok(ClassEpoch {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_accuracy: correct as f64 / seen as f64,
            val_accuracy,
            seconds,
            images_per_s: seen as f64 / seconds.max(1e-9),
        })
    }

    /// Every epoch of the configuration, reporting each as it ends.
    pub fn run(
        &mut self,
        on_epoch: &mut dyn FnMut(&ClassEpoch),
    ) -> Result<Vec<ClassEpoch>, TrainError> {
        let mut epochs = Vec::with_capacity(self.cfg.epochs);
        for epoch in 1..=self.cfg.epochs {
            let record = self.epoch(epoch)?;
            on_epoch(&record);
            epochs.push(record);
        }
        Ok(epochs)
    }
}

/// The predicted class of each image: the index of its largest logit (the first on a tie).
pub fn classify(
    replica: &mut Replica,
    images: &ImageSet,
    indices: &[u32],
) -> Result<Vec<u8>, TrainError> {
    let classes = replica.network().spec().out_width();
    let logits = replica.embed(images, indices, TestAugment::None)?;
    Ok(logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best as u8
        })
        .collect())
}

/// Fraction of `predicted` equal to the labels of `indices` in `images`; 0 for no images.
pub fn accuracy(predicted: &[u8], images: &ImageSet, indices: &[u32]) -> f64 {
    let hits = predicted
        .iter()
        .zip(indices)
        .filter(|&(&p, &i)| images.labels().get(i as usize) == Some(&p))
        .count();
    hits as f64 / indices.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    /// Forty 28x28 images whose class is written in their brightness, so a few steps learn it.
    fn easy_dataset() -> Arc<Dataset> {
        let n = 40;
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images: Vec<u8> = labels
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c * 25, 784))
            .collect();
        let set = ImageSet::new(images, labels, 1, 28, 28).unwrap();
        Arc::new(Dataset {
            kind: DatasetKind::Mnist,
            train: set.clone(),
            test: set,
        })
    }

    #[test]
    fn training_lowers_the_loss_and_is_seeded() {
        let cfg = ClassifierConfig {
            epochs: 30,
            batch_size: 8,
            ..ClassifierConfig::default()
        };
        let pool: Vec<u32> = (0..30).collect();
        let val: Vec<u32> = (30..40).collect();
        let train = |cfg: ClassifierConfig| {
            let mut t = ClassifierTrainer::new(
                cfg,
                easy_dataset(),
                pool.clone(),
                val.clone(),
                &Device::Cpu,
            )
            .unwrap();
            let epochs = t.run(&mut |_| {}).unwrap();
            (epochs, t.params().to_vec())
        };
        let (epochs, params) = train(cfg.clone());
        assert_eq!(epochs.len(), 30);
        let (first, last) = (&epochs[0], &epochs[29]);
        assert!(last.train_loss < first.train_loss, "{first:?} -> {last:?}");
        assert!(
            (0.0..=1.0).contains(&last.val_accuracy) && last.seconds > 0.0,
            "{last:?}"
        );
        assert_eq!(train(cfg).1, params, "same seed, same weights");
    }

    #[test]
    fn classify_takes_the_largest_logit_and_accuracy_counts_hits() {
        let ds = easy_dataset();
        let cfg = ClassifierConfig::default();
        let mut t =
            ClassifierTrainer::new(cfg, ds.clone(), vec![0], Vec::new(), &Device::Cpu).unwrap();
        let idx: Vec<u32> = (0..12).collect();
        let predicted = classify(t.replica_mut(), &ds.train, &idx).unwrap();
        let logits = t
            .replica_mut()
            .embed(&ds.train, &idx, TestAugment::None)
            .unwrap();
        for (row, &p) in logits.chunks_exact(10).zip(&predicted) {
            assert!(row.iter().all(|&v| v <= row[p as usize]), "{row:?} {p}");
        }
        let labels: Vec<u8> = idx.iter().map(|&i| ds.train.label(i as usize)).collect();
        assert_eq!(accuracy(&labels, &ds.train, &idx), 1.0);
        assert_eq!(accuracy(&[], &ds.train, &[]), 0.0);
    }

    #[test]
    fn refuses_an_empty_pool_and_a_zero_batch() {
        let ds = easy_dataset();
        let zero = ClassifierConfig {
            batch_size: 0,
            ..ClassifierConfig::default()
        };
        let dev = Device::Cpu;
        let err = ClassifierTrainer::new(zero, ds.clone(), vec![0], Vec::new(), &dev).err();
        assert!(err.unwrap().to_string().contains("batch size"));
        let cfg = ClassifierConfig::default();
        let err = ClassifierTrainer::new(cfg, ds, Vec::new(), Vec::new(), &dev).err();
        assert!(err.unwrap().to_string().contains("no training images"));
    }
}
