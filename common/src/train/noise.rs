//! The per-pair randomness of training: augmentation and dropout. Both are drawn from a key of
//! the run's seed and the pair, so whoever computes a pair's gradient (one process, any worker
//! of any cluster size) draws the same, and the weights do not depend on the sharding.

use candle_core::{Device, Tensor};

use crate::config::TrainConfig;
use crate::data::{Augment, mix};
use crate::model::ModelError;
use crate::model::lenet::HIDDEN;

/// Separates dropout's draws from augmentation's, which read bits of the same image key.
const DROPOUT_SALT: u64 = 0xD809_0D7A_5EED_0001;

/// What a replica draws per training pair.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Noise {
    /// Training-image augmentation (`--augment`).
    pub augment: Augment,
    /// The crop's largest shift in pixels (`--crop-pad`); none for an eighth of the side.
    pub crop_pad: Option<u32>,
    /// Probability of dropping each hidden fully connected unit (`--dropout`), 0 for none.
    pub dropout: f32,
    /// The run's seed, which every key derives from.
    pub seed: u64,
}

impl Noise {
    /// The noise `cfg`'s recipe asks for.
    pub fn of(cfg: &TrainConfig) -> Self {
        Noise {
            augment: cfg.recipe.augment,
            crop_pad: cfg.recipe.crop_pad,
            dropout: cfg.recipe.dropout as f32,
            seed: cfg.seed,
        }
    }

    /// Whether a training step draws anything at all.
    pub fn any(&self) -> bool {
        self.augment != Augment::None || self.dropout > 0.0
    }

    /// Inverted-dropout masks of the two hidden layers for the images whose keys are `keys`
    /// (one row per image: 0 for a dropped unit, 1/(1-p) for a kept one); none without dropout.
    pub fn masks(&self, keys: &[u64], device: &Device) -> Result<Option<[Tensor; 2]>, ModelError> {
        if self.dropout <= 0.0 {
            return Ok(None);
        }
        let p = self.dropout;
        let keep = 1.0 / (1.0 - p);
        let draw = |layer: usize, width: usize| -> Result<Tensor, ModelError> {
            let mut values = Vec::with_capacity(keys.len() * width);
            for &key in keys {
                let image = mix(key ^ DROPOUT_SALT ^ ((layer as u64) << 56));
                values.extend((0..width as u64).map(|unit| {
                    // The top 24 bits as a uniform draw in [0, 1), exact in f32.
                    let u = (mix(image ^ unit) >> 40) as f32 / (1u32 << 24) as f32;
                    if u < p { 0.0 } else { keep }
                }));
            }
            Ok(Tensor::from_vec(values, (keys.len(), width), device)?)
        };
        Ok(Some([draw(0, HIDDEN[0])?, draw(1, HIDDEN[1])?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_about_p_repeat_and_scale_the_kept_units() {
        let noise = Noise {
            dropout: 0.25,
            seed: 3,
            ..Noise::default()
        };
        let keys: Vec<u64> = (0..200).map(|i| i * 7919).collect();
        let draw = || {
            noise.masks(&keys, &Device::Cpu).unwrap().unwrap()[0]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let m = draw();
        assert_eq!(m, draw(), "the same keys draw the same masks");
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        let other: Vec<u64> = keys.iter().map(|k| k + 1).collect();
        let m2 = noise.masks(&other, &Device::Cpu).unwrap().unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_ne!(m, m2, "other pairs draw other masks");
        assert!(
            Noise::default()
                .masks(&keys, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
