//! The training recipe beyond the paper's: augmentation, weight decay, a learning-rate schedule,
//! which weights are tested and when to stop. Every default is the paper's setting (or, where
//! the paper is silent, the plainest one), so a run without these flags is the paper's run.

use serde::{Deserialize, Serialize};

use crate::data::{Augment, TestAugment};
use crate::optim::LrSchedule;

use super::weight_average::ema_decay;

/// Which weights the run tests (and writes as its selected model) at its end.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The weights after the last epoch trained.
    #[default]
    Last,
    /// The weights after the epoch with the highest validation pair accuracy (the earliest
    /// such epoch on a tie); the test set is never used to choose.
    BestVal,
}

impl Selection {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Selection::Last => "last",
            Selection::BestVal => "best-val",
        }
    }
}

/// The recipe flags, shared by training runs and `bench paper`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    /// Training-image augmentation: none (the paper), crop (pad by an eighth of the side with
    /// black and crop back at a random offset), crop-flip (also mirror half the images; for
    /// CIFAR-10, not for digits), flip (only the mirror), crop-flip-cutout (then black out a
    /// square of a quarter of the side) or crop-flip-jitter (then scale brightness and contrast
    /// by 0.8 to 1.2). Drawn per pair from --seed, so any number of workers trains the same
    /// bytes.
    #[arg(long, value_enum, env = "SIAMESE_AUGMENT", default_value = "none")]
    pub augment: Augment,
    /// The crop's largest shift in pixels, 1 to 8, for an --augment that crops (default: an
    /// eighth of the side, 3 for digits and 4 for CIFAR-10): a smaller shift regularises less.
    #[arg(long, env = "SIAMESE_CROP_PAD", value_parser = clap::value_parser!(u32).range(CROP_PADS))]
    pub crop_pad: Option<u32>,
    /// Decoupled weight decay (AdamW), 0 (the paper) to 1: each step also shrinks every weight
    /// by lr x this.
    #[arg(long, env = "SIAMESE_WEIGHT_DECAY", default_value_t = 0.0, value_parser = weight_decay, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Dropout on the two hidden fully connected layers during training, 0 (the paper) to 0.9:
    /// each unit is dropped with this probability, the kept ones scaled up to match; drawn per
    /// pair from --seed, like --augment.
    #[arg(long, env = "SIAMESE_DROPOUT", default_value_t = 0.0, value_parser = dropout, allow_negative_numbers = true)]
    pub dropout: f64,
    /// Learning-rate schedule: constant (the paper) or cosine (to 0 over --epochs).
    #[arg(
        long,
        value_enum,
        env = "SIAMESE_LR_SCHEDULE",
        default_value = "constant"
    )]
    pub lr_schedule: LrSchedule,
    /// Which weights are tested at the end: last (after the last epoch) or best-val (after the
    /// epoch of highest validation accuracy, kept in the checkpoint so that a resumed run
    /// chooses the same; also written to <checkpoint>.best.safetensors).
    #[arg(long, value_enum, env = "SIAMESE_SELECT", default_value = "last")]
    pub select: Selection,
    /// Early stopping: end training once validation accuracy has not improved for N epochs
    /// (at least 1; default: train every epoch of --epochs).
    #[arg(long, env = "SIAMESE_PATIENCE", value_parser = clap::value_parser!(u32).range(1..))]
    pub patience: Option<u32>,
    /// Drops of the learning rate on a plateau, 0 to 6 (needs --patience): when validation
    /// accuracy has not improved for --patience epochs, divide the rate by 10 and go on, up to
    /// N times; the run ends when the patience runs out after the last. 0 (default): the
    /// patience ends the run at once.
    #[arg(
        long,
        env = "SIAMESE_LR_DROPS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=6),
        requires = "patience"
    )]
    pub lr_drops: u32,
    /// A fixed schedule of drops of the rate: divide it by 10 after each of these epochs
    /// (comma-separated and increasing, e.g. the epochs where a --lr-drops run's plateaus
    /// dropped it). Not with --lr-drops.
    #[arg(
        long,
        env = "SIAMESE_LR_DROP_AFTER",
        value_name = "EPOCHS",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with = "lr_drops"
    )]
    pub lr_drop_after: Vec<u32>,
    /// Train on the validation part too, that is on the whole training file: a final fit at
    /// a schedule an earlier, validated run chose. Validation then scores images the model
    /// trained on, so it may steer nothing: needs --select last and no --patience.
    #[arg(long, env = "SIAMESE_TRAIN_ON_VALIDATION")]
    pub train_on_validation: bool,
    /// Exponential moving average of the weights: 0 (the paper: off), or a decay from 0.9 to
    /// under 1 (0.999 trails about 1,000 steps). Validation, --select and the test then score
    /// the average instead of the last step's weights; training itself is unchanged, but the
    /// average's validation decides --patience and --lr-drops.
    #[arg(long, env = "SIAMESE_EMA", value_name = "DECAY", default_value_t = 0.0, value_parser = ema_decay, allow_negative_numbers = true)]
    pub ema: f64,
    /// Test-time augmentation: none (the paper) or mirror (each test image's embedding is the
    /// mean of its own and its horizontal mirror's, as are the class means' training images;
    /// for CIFAR-10, not digits, whose mirror is no digit). Only the test figures change:
    /// validation, and so training, are the same bytes.
    #[arg(long, value_enum, env = "SIAMESE_TEST_AUGMENT", default_value = "none")]
    pub test_augment: TestAugment,
}

impl Recipe {
    /// The recipe in a few words, for logs and tables ("paper" when every flag is the paper's).
    pub fn describe(&self) -> String {
        describe_parts(self.parts())
    }

    /// Refuses flags that mean nothing together, or out of range where they arrive without
    /// the command line's checks (a worker's Welcome), naming them.
    pub fn check(&self) -> Result<(), String> {
        match (self.crop_pad, self.augment.crops()) {
            (Some(pad), _) if !CROP_PADS.contains(&i64::from(pad)) => Err(format!(
                "--crop-pad {pad} is not in {}..={}",
                CROP_PADS.start(),
                CROP_PADS.end()
            )),
            (Some(pad), false) => Err(format!(
                "--crop-pad {pad} sets the crop's shift, but --augment {} does not crop: use crop, crop-flip, crop-flip-cutout or crop-flip-jitter",
                self.augment.name()
            )),
            // Shortest round-trip formatting: the decay parses back to itself.
            _ => ema_decay(&self.ema.to_string()).map(|_| ()),
        }?;
        self.check_drop_schedule()?;
        self.check_train_on_validation()
    }

    /// A fixed schedule of drops: increasing epochs from 1, and not beside plateau drops.
    fn check_drop_schedule(&self) -> Result<(), String> {
        let epochs = &self.lr_drop_after;
        if epochs.first() == Some(&0) || epochs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "--lr-drop-after {} must list increasing epochs from 1",
                self.drop_schedule()
            ));
        }
        if !epochs.is_empty() && self.lr_drops > 0 {
            return Err(format!(
                "--lr-drop-after {} fixes when the rate drops, --lr-drops {} drops it on plateaus: give one of them",
                self.drop_schedule(),
                self.lr_drops
            ));
        }
        Ok(())
    }

    /// Training on the validation part leaves validation nothing it may choose.
    fn check_train_on_validation(&self) -> Result<(), String> {
        if !self.train_on_validation {
            return Ok(());
        }
        let steering = [
            (self.select == Selection::BestVal).then(|| "--select best-val".to_string()),
            self.patience.map(|p| format!("--patience {p}")),
        ];
        match steering.into_iter().flatten().collect::<Vec<_>>() {
            flags if flags.is_empty() => Ok(()),
            flags => Err(format!(
                "--train-on-validation trains on the validation images, so validation cannot choose for {}: use --select last, no --patience, and a fixed schedule (--epochs, --lr-drop-after)",
                flags.join(" or ")
            )),
        }
    }

    /// `--lr-drop-after` as given on the command line.
    pub fn drop_schedule(&self) -> String {
        epoch_list(&self.lr_drop_after)
    }

    /// A few words for each flag that is not the paper's, in the flags' order.
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if self.augment != Augment::None {
            parts.push(format!("augment {}", self.augment.name()));
        }
        if let Some(pad) = self.crop_pad {
            parts.push(format!("crop pad {pad}"));
        }
        if self.weight_decay != 0.0 {
            parts.push(format!("weight decay {}", self.weight_decay));
        }
        if self.dropout != 0.0 {
            parts.push(format!("dropout {}", self.dropout));
        }
        if self.lr_schedule != LrSchedule::Constant {
            parts.push(format!("{} lr", self.lr_schedule.name()));
        }
        if self.select != Selection::Last {
            parts.push(format!("select {}", self.select.name()));
        }
        if let Some(p) = self.patience {
            parts.push(format!("patience {p}"));
        }
        if self.lr_drops > 0 {
            parts.push(format!("lr /10 on plateau up to {}x", self.lr_drops));
        }
        if !self.lr_drop_after.is_empty() {
            parts.push(format!("lr /10 after epochs {}", self.drop_schedule()));
        }
        if self.train_on_validation {
            parts.push("trained on validation too".into());
        }
        if self.ema != 0.0 {
            parts.push(format!("weight average {}", self.ema));
        }
        if self.test_augment != TestAugment::None {
            parts.push(format!("test-time {}", self.test_augment.name()));
        }
        parts
    }
}

/// Epochs as a comma-separated list flag takes them.
pub fn epoch_list(epochs: &[u32]) -> String {
    let epochs: Vec<String> = epochs.iter().map(u32::to_string).collect();
    epochs.join(",")
}

/// The crop shifts `--crop-pad` accepts, in pixels.
pub const CROP_PADS: std::ops::RangeInclusive<i64> = 1..=8;

/// Settings in a few words, joined; "paper" when none differs from the paper's.
pub fn describe_parts(parts: Vec<String>) -> String {
    match parts.is_empty() {
        true => "paper".into(),
        false => parts.join(", "),
    }
}

/// A weight decay: finite, 0 to 1.
pub fn weight_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a weight decay (finite, 0 to 1)")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// A dropout probability: finite, 0 to 0.9 (past that a layer keeps too few units to learn).
pub fn dropout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=0.9).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not a dropout probability (finite, 0 to 0.9)"
        )),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_decay_names_its_range() {
        assert_eq!(weight_decay("0.05"), Ok(0.05));
        for bad in ["-0.1", "2", "NaN", "inf"] {
            let e = weight_decay(bad).unwrap_err();
            assert!(e.contains("weight decay"), "{bad}: {e}");
        }
        assert!(weight_decay("x").unwrap_err().contains("not a number"));
        assert_eq!(dropout("0.3"), Ok(0.3));
        for bad in ["-0.1", "0.95", "1", "NaN"] {
            let e = dropout(bad).unwrap_err();
            assert!(e.contains("dropout probability"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_crop_pad_needs_an_augmentation_that_crops() {
        let with = |augment| Recipe {
            augment,
            crop_pad: Some(2),
            ..Recipe::default()
        };
        for augment in [Augment::None, Augment::Flip] {
            let e = with(augment).check().unwrap_err();
            assert!(
                e.contains("--crop-pad 2") && e.contains(augment.name()),
                "{e}"
            );
        }
        for augment in [Augment::Crop, Augment::CropFlip, Augment::CropFlipJitter] {
            assert_eq!(with(augment).check(), Ok(()));
        }
        assert_eq!(
            with(Augment::CropFlip).describe(),
            "augment crop-flip, crop pad 2"
        );
    }

    #[test]
    fn a_fixed_schedule_is_increasing_and_not_beside_plateau_drops() {
        let with = |lr_drop_after: Vec<u32>, lr_drops| Recipe {
            lr_drop_after,
            lr_drops,
            patience: Some(10),
            ..Recipe::default()
        };
        assert_eq!(with(vec![5, 9], 0).check(), Ok(()));
        for bad in [vec![9, 5], vec![5, 5], vec![0, 3]] {
            let e = with(bad.clone(), 0).check().unwrap_err();
            assert!(
                e.contains("must list increasing epochs from 1"),
                "{bad:?}: {e}"
            );
        }
        let e = with(vec![5, 9], 2).check().unwrap_err();
        assert!(
            e.contains("--lr-drop-after 5,9") && e.contains("--lr-drops 2"),
            "{e}"
        );
        assert_eq!(
            with(vec![5, 9], 0).describe(),
            "patience 10, lr /10 after epochs 5,9"
        );
    }

    #[test]
    fn training_on_validation_leaves_validation_nothing_to_choose() {
        let with = |select, patience| Recipe {
            train_on_validation: true,
            select,
            patience,
            lr_drop_after: vec![3],
            ..Recipe::default()
        };
        assert_eq!(with(Selection::Last, None).check(), Ok(()));
        assert_eq!(
            with(Selection::Last, None).describe(),
            "lr /10 after epochs 3, trained on validation too"
        );
        let e = with(Selection::BestVal, Some(4)).check().unwrap_err();
        assert!(
            e.contains("--train-on-validation") && e.contains("--select best-val or --patience 4"),
            "{e}"
        );
        let e = with(Selection::Last, Some(4)).check().unwrap_err();
        assert!(e.contains("cannot choose for --patience 4"), "{e}");
    }

    #[test]
    fn describe_names_what_differs_from_the_paper() {
        assert_eq!(Recipe::default().describe(), "paper");
        let r = Recipe {
            augment: Augment::CropFlip,
            select: Selection::BestVal,
            patience: Some(20),
            lr_drops: 2,
            ..Recipe::default()
        };
        assert_eq!(
            r.describe(),
            "augment crop-flip, select best-val, patience 20, lr /10 on plateau up to 2x"
        );
    }
}
