//! What makes two runs the same run: the settings and data that decide every weight. A
//! checkpoint continues only the run it came from.

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::{Augment, Dataset};
use crate::optim::LrSchedule;

use super::recipe::epoch_list;

/// The settings and data a checkpoint must share with the run that resumes from it. Epochs,
/// step limits, workers, threads, aggregation mode and output paths may change between the two:
/// none of them changes the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The model's layout and arithmetic version.
    pub model_version: String,
    /// Dataset name.
    pub dataset: String,
    /// md5 of the decoded images and labels.
    pub data_digest: String,
    /// `--seed`.
    pub seed: u64,
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--micro-batch`.
    pub micro_batch: u32,
    /// `--embedding`.
    pub embedding: u32,
    /// `--lr`.
    pub lr: f64,
    /// `--train-subset`.
    pub train_subset: Option<usize>,
    /// `--augment`.
    #[serde(default)]
    pub augment: Augment,
    /// `--crop-pad`.
    #[serde(default)]
    pub crop_pad: Option<u32>,
    /// `--weight-decay`.
    #[serde(default)]
    pub weight_decay: f64,
    /// `--lr-schedule`.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// `--dropout`.
    #[serde(default)]
    pub dropout: f64,
    /// `--ema`: the average's validation decides the drops of the rate.
    #[serde(default)]
    pub ema: f64,
    /// `--lr-drop-after`: a fixed schedule decides the rate from the start, unlike plateau
    /// drops, which a resumed run may add.
    #[serde(default)]
    pub lr_drop_after: Vec<u32>,
    /// `--train-on-validation`: the training pool.
    #[serde(default)]
    pub train_on_validation: bool,
    /// `--epochs`, where the schedule spans them (cosine); none for the constant rate.
    #[serde(default)]
    pub schedule_epochs: Option<usize>,
}

impl RunIdentity {
    /// The identity of a run of `cfg` on `dataset`.
    pub fn of(cfg: &TrainConfig, dataset: &Dataset) -> Self {
        RunIdentity {
            model_version: crate::model::MODEL_VERSION.into(),
            dataset: dataset.kind.name().into(),
            data_digest: dataset.digest(),
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            micro_batch: cfg.micro_batch,
            embedding: cfg.embedding,
            lr: cfg.lr,
            train_subset: cfg.train_subset,
            augment: cfg.recipe.augment,
            crop_pad: cfg.recipe.crop_pad,
            weight_decay: cfg.recipe.weight_decay,
            lr_schedule: cfg.recipe.lr_schedule,
            dropout: cfg.recipe.dropout,
            ema: cfg.recipe.ema,
            lr_drop_after: cfg.recipe.lr_drop_after.clone(),
            train_on_validation: cfg.recipe.train_on_validation,
            schedule_epochs: (cfg.recipe.lr_schedule != LrSchedule::Constant).then(|| cfg.epochs()),
        }
    }

    /// Every field that differs, as "name: this run's value here, the other's there".
    pub fn differences(&self, other: &RunIdentity) -> Vec<String> {
        let fields: [(&str, Shown); 18] = [
            ("model version", |r| r.model_version.clone()),
            ("dataset", |r| r.dataset.clone()),
            ("data digest", |r| r.data_digest.clone()),
            ("--seed", |r| r.seed.to_string()),
            ("--batch-size", |r| r.batch_size.to_string()),
            ("--micro-batch", |r| r.micro_batch.to_string()),
            ("--embedding", |r| r.embedding.to_string()),
            ("--lr", |r| r.lr.to_string()),
            ("--train-subset", |r| optional(r.train_subset)),
            ("--augment", |r| r.augment.name().into()),
            ("--crop-pad", |r| optional(r.crop_pad.map(|p| p as usize))),
            ("--weight-decay", |r| r.weight_decay.to_string()),
            ("--lr-schedule", |r| r.lr_schedule.name().into()),
            ("--dropout", |r| r.dropout.to_string()),
            ("--ema", |r| r.ema.to_string()),
            ("--lr-drop-after", |r| match r.lr_drop_after.is_empty() {
                true => "none".into(),
                false => epoch_list(&r.lr_drop_after),
            }),
            ("--train-on-validation", |r| {
                r.train_on_validation.to_string()
            }),
            ("--epochs (the schedule spans them)", |r| {
                optional(r.schedule_epochs)
            }),
        ];
        fields
            .iter()
            .filter_map(|(name, value)| {
                let (here, there) = (value(self), value(other));
                (here != there).then(|| format!("{name} is {here} here, {there} in the checkpoint"))
            })
            .collect()
    }
}

/// One field of an identity, as the message shows it.
type Shown = fn(&RunIdentity) -> String;

/// An optional count as a flag shows it.
fn optional(n: Option<usize>) -> String {
    n.map_or_else(|| "none".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RunIdentity {
        RunIdentity {
            model_version: "m".into(),
            dataset: "mnist".into(),
            data_digest: "abc".into(),
            seed: 1,
            batch_size: 64,
            micro_batch: 8,
            embedding: 10,
            lr: 1e-3,
            train_subset: None,
            augment: Augment::None,
            crop_pad: None,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            dropout: 0.0,
            ema: 0.0,
            lr_drop_after: Vec::new(),
            train_on_validation: false,
            schedule_epochs: None,
        }
    }

    #[test]
    fn names_every_field_that_differs() {
        let a = identity();
        assert!(a.differences(&a).is_empty());
        let b = RunIdentity {
            seed: 2,
            batch_size: 32,
            train_subset: Some(100),
            augment: Augment::CropFlip,
            crop_pad: Some(2),
            lr_schedule: LrSchedule::Cosine,
            dropout: 0.3,
            ema: 0.999,
            lr_drop_after: vec![5, 9],
            train_on_validation: true,
            schedule_epochs: Some(40),
            ..identity()
        };
        let d = a.differences(&b);
        assert_eq!(
            d,
            [
                "--seed is 1 here, 2 in the checkpoint",
                "--batch-size is 64 here, 32 in the checkpoint",
                "--train-subset is none here, 100 in the checkpoint",
                "--augment is none here, crop-flip in the checkpoint",
                "--crop-pad is none here, 2 in the checkpoint",
                "--lr-schedule is constant here, cosine in the checkpoint",
                "--dropout is 0 here, 0.3 in the checkpoint",
                "--ema is 0 here, 0.999 in the checkpoint",
                "--lr-drop-after is none here, 5,9 in the checkpoint",
                "--train-on-validation is false here, true in the checkpoint",
                "--epochs (the schedule spans them) is none here, 40 in the checkpoint"
            ]
        );
    }
}
