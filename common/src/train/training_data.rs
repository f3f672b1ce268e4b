//! The data a run trains and is scored on: the dataset, the spec's fixed split, and the
//! validation and test pairs, which are drawn once and never change between epochs.

use std::sync::Arc;

use super::TrainError;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::pairs::{ClassIndex, Pair, split, test_pairs, validation_pairs};

/// The dataset plus the fixed split and the pairs that do not change between epochs.
pub struct TrainingData {
    /// The decoded images.
    pub dataset: Arc<Dataset>,
    /// Training-split indices into the training file (then the validation part's, with
    /// `--train-on-validation`).
    pub train_pool: Vec<u32>,
    /// Validation-split indices into the training file (all of them; the classifier's
    /// validation set).
    pub val_pool: Vec<u32>,
    /// Validation pairs, drawn once.
    pub val_pairs: Vec<Pair>,
    /// Test pairs (all 10,000 unless a prefix was asked for).
    pub test_pairs: Vec<Pair>,
}

impl TrainingData {
    /// Applies the spec's split and pair protocol (and any subset flags) to a loaded dataset.
    pub fn prepare(cfg: &TrainConfig, dataset: Arc<Dataset>) -> Result<Self, TrainError> {
        let (n_train, n_val) = dataset.kind.train_val_sizes();
        let total = dataset.train.len();
        if total < n_train + n_val {
            return Err(TrainError::Config(format!(
                "the training file holds {total} images, the {} split needs {}",
                dataset.kind.name(),
                n_train + n_val
            )));
        }
        let s = split(total, n_train, n_val)?;
        let mut train_pool = s.train;
        if let Some(n) = cfg.train_subset {
            train_pool.truncate(n);
        }
        if cfg.recipe.train_on_validation {
            train_pool.extend(&s.val);
        }
        let labels = dataset.train.labels();
        if let Some(n) = cfg.train_subset {
            // A small subset may lack the images pairing needs; say so now, naming the flag,
            // rather than when the first epoch draws its pairs on a started cluster.
            let pairable = ClassIndex::new(labels, &train_pool).and_then(|i| i.check_pairable());
            pairable.map_err(|e| {
                TrainError::Config(format!(
                    "--train-subset {n} leaves {} training images, too few to draw pairs from: {e}",
                    train_pool.len()
                ))
            })?;
        }
        let mut val_pairs = validation_pairs(labels, &s.val, cfg.seed)?;
        if let Some(n) = cfg.val_pairs {
            val_pairs.truncate(n);
        }
        let mut test = test_pairs(dataset.test.labels())?;
        if let Some(n) = cfg.test_pairs {
            test.truncate(n);
        }
        Ok(TrainingData {
            dataset,
            train_pool,
            val_pool: s.val,
            val_pairs,
            test_pairs: test,
        })
    }
}
