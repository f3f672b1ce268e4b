//! One model replica: turns pair indices (or labelled image indices, for the classifier) into a
//! gradient, and image indices into embeddings.

use candle_core::{Device, Tensor};

use super::{Noise, TrainError};
use crate::data::{ImageSet, TestAugment, augment_key, mirror};
use crate::model::{ClassStep, ModelSpec, Network, PairStep};
use crate::pairs::Pair;

/// Images per forward pass when embedding for evaluation.
const EMBED_BATCH: usize = 512;

/// A replica of the network plus the buffer its batches are decoded into.
pub struct Replica {
    net: Network,
    /// Reused across steps: a fresh 400 KB buffer per step costs page faults.
    pixels: Vec<f32>,
    indices: Vec<u32>,
    /// What training steps draw per pair (augmentation, dropout), from the run's seed.
    noise: Noise,
    /// One key per image of the batch being built (empty: nothing is drawn).
    keys: Vec<u64>,
    scratch: Vec<f32>,
}

impl Replica {
    /// A replica on `device` starting from `weights`.
    pub fn new(spec: ModelSpec, weights: &[f32], device: &Device) -> Result<Self, TrainError> {
        Ok(Replica {
            net: Network::new(spec, weights, device)?,
            pixels: Vec::new(),
            indices: Vec::new(),
            noise: Noise::default(),
            keys: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Augments the training images of every later pair gradient and drops hidden units as
    /// `noise` says (`--augment`, `--dropout`); evaluation is never augmented nor dropped.
    pub fn set_noise(&mut self, noise: Noise) {
        self.noise = noise;
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Replaces the weights.
    pub fn set_weights(&mut self, weights: &[f32]) -> Result<(), TrainError> {
        Ok(self.net.set_weights(weights)?)
    }

    fn batch_tensor(&mut self, images: &ImageSet) -> Result<Tensor, TrainError> {
        let (c, h, w) = images.shape();
        self.pixels
            .resize(self.indices.len() * images.image_len(), 0.0);
        images.fill_f32(&self.indices, &mut self.pixels);
        let (mode, pad) = (self.noise.augment, self.noise.crop_pad);
        let n = images.image_len();
        for (image, &key) in self.pixels.chunks_exact_mut(n).zip(&self.keys) {
            mode.apply(key, image, (c, h, w), pad, &mut self.scratch);
        }
        Ok(Tensor::from_slice(
            &self.pixels,
            (self.indices.len(), c, h, w),
            self.net.device(),
        )
        .map_err(crate::model::ModelError::from)?)
    }

    /// Gradient of the loss summed over `pairs`, whose indices point into `images`, summed by
    /// micro-batches of `per` pairs (see `aggregation::tree`).
    pub fn pair_gradient(
        &mut self,
        images: &ImageSet,
        pairs: &[Pair],
        per: usize,
    ) -> Result<PairStep, TrainError> {
        check_indices(images, pairs.iter().flat_map(|p| [p.a, p.b]))?;
        self.indices.clear();
        self.indices.extend(pairs.iter().map(|p| p.a));
        self.indices.extend(pairs.iter().map(|p| p.b));
        self.keys.clear();
        if self.noise.any() {
            let seed = self.noise.seed;
            for side in 0..2u8 {
                self.keys.extend(
                    pairs
                        .iter()
                        .map(|p| augment_key(seed, p.a, p.b, p.same, side)),
                );
            }
        }
        let x = self.batch_tensor(images)?;
        let masks = self.noise.masks(&self.keys, self.net.device())?;
        self.keys.clear();
        let same: Vec<f32> = pairs
            .iter()
            .map(|p| if p.same { 1.0 } else { 0.0 })
            .collect();
        let y = Tensor::from_vec(same, pairs.len(), self.net.device())
            .map_err(crate::model::ModelError::from)?;
        Ok(self.net.pair_step_masked(&x, &y, per, masks.as_ref())?)
    }

    /// Gradient of the classifier's cross-entropy summed over the images `batch` of `images`,
    /// against their labels.
    pub fn class_gradient(
        &mut self,
        images: &ImageSet,
        batch: &[u32],
    ) -> Result<ClassStep, TrainError> {
        check_indices(images, batch.iter().copied())?;
        self.indices.clear();
        self.indices.extend_from_slice(batch);
        let x = self.batch_tensor(images)?;
        let labels: Vec<u32> = batch
            .iter()
            .map(|&i| u32::from(images.label(i as usize)))
            .collect();
        let y = Tensor::from_vec(labels, batch.len(), self.net.device())
            .map_err(crate::model::ModelError::from)?;
        Ok(self.net.class_step(&x, &y)?)
    }

    /// Subnet outputs of the given images, `indices.len() x width`, row-major; with
    /// [`TestAugment::Mirror`] each row is the mean of the image's and its mirror's.
    pub fn embed(
        &mut self,
        images: &ImageSet,
        indices: &[u32],
        views: TestAugment,
    ) -> Result<Vec<f32>, TrainError> {
        check_indices(images, indices.iter().copied())?;
        let (c, h, w) = images.shape();
        let mut out = Vec::with_capacity(indices.len() * self.net.spec().out_width());
        for chunk in indices.chunks(EMBED_BATCH) {
            self.indices.clear();
            self.indices.extend_from_slice(chunk);
            let x = self.batch_tensor(images)?;
            let mut e = self.net.embed(&x)?;
            if views == TestAugment::Mirror {
                // Rows are contiguous across the whole batch: one pass mirrors every image.
                mirror(&mut self.pixels, w);
                let x = Tensor::from_slice(&self.pixels, (chunk.len(), c, h, w), self.net.device())
                    .map_err(crate::model::ModelError::from)?;
                let m = self.net.embed(&x)?;
                e = ((e + m).and_then(|t| t * 0.5)).map_err(crate::model::ModelError::from)?;
            }
            out.extend(
                e.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(crate::model::ModelError::from)?,
            );
        }
        Ok(out)
    }
}

/// Refuses indices past the image set, which would otherwise panic deep in a kernel.
fn check_indices(images: &ImageSet, indices: impl Iterator<Item = u32>) -> Result<(), TrainError> {
    let n = images.len();
    for i in indices {
        if i as usize >= n {
            return Err(TrainError::Config(format!(
                "image index {i} is out of range (the set holds {n} images)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::pairs::shard_ranges;

    /// `n` synthetic 28x28 digits with labels 0-9 in turn.
    pub(crate) fn digits(n: usize) -> ImageSet {
        let images: Vec<u8> = (0..n * 784).map(|i| ((i * 7919) % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        ImageSet::new(images, labels, 1, 28, 28).unwrap()
    }

    /// The data-parallel identity the cluster rests on: shard gradients of the summed loss add
    /// up to the whole batch's.
    #[test]
    fn weighted_shard_gradients_equal_the_batch_gradient() {
        let set = digits(40);
        let pairs: Vec<Pair> = (0..16u32)
            .map(|i| Pair {
                a: i,
                b: (i * 3 + 1) % 40,
                same: i % 2 == 0,
            })
            .collect();
        let spec = ModelSpec {
            channels: 1,
            size: 28,
            head: crate::model::Head::Siamese { width: 10 },
        };
        let mut r = Replica::new(spec, &spec.init(3), &Device::Cpu).unwrap();
        let whole = r.pair_gradient(&set, &pairs, 8).unwrap().grad;
        let mut sum = vec![0.0f64; whole.len()];
        for range in shard_ranges(pairs.len(), 3) {
            let g = r.pair_gradient(&set, &pairs[range], 8).unwrap().grad;
            sum.iter_mut()
                .zip(&g)
                .for_each(|(a, b)| *a += f64::from(*b));
        }
        let avg: Vec<f32> = sum.iter().map(|&v| v as f32).collect();
        let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = whole
            .iter()
            .zip(&avg)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-6 * scale,
            "max difference {diff:e} against max gradient {scale:e}"
        );
    }

    /// Augmentation and dropout each reach the gradient, the same for the same pairs whatever
    /// else the replica computed in between, and never touch embeddings.
    #[test]
    fn noisy_gradients_differ_repeat_and_spare_evaluation() {
        let set = digits(24);
        let pairs: Vec<Pair> = (0..8u32)
            .map(|i| Pair {
                a: i,
                b: i + 8,
                same: i % 2 == 0,
            })
            .collect();
        let spec = ModelSpec::siamese(crate::data::DatasetKind::Mnist, 10);
        let mut r = Replica::new(spec, &spec.init(3), &Device::Cpu).unwrap();
        let plain = r.pair_gradient(&set, &pairs, 8).unwrap().grad;
        let embedded = r.embed(&set, &[0, 1, 2], TestAugment::None).unwrap();
        let augment = Noise {
            augment: crate::data::Augment::Crop,
            seed: 9,
            ..Noise::default()
        };
        let dropout = Noise {
            dropout: 0.3,
            seed: 9,
            ..Noise::default()
        };
        let mut seen = vec![plain];
        for noise in [augment, dropout] {
            r.set_noise(noise);
            let first = r.pair_gradient(&set, &pairs, 8).unwrap().grad;
            r.pair_gradient(&set, &pairs[..4], 4).unwrap();
            let again = r.pair_gradient(&set, &pairs, 8).unwrap().grad;
            assert!(!seen.contains(&first), "{noise:?} changed nothing");
            assert_eq!(first, again, "{noise:?}");
            assert_eq!(
                r.embed(&set, &[0, 1, 2], TestAugment::None).unwrap(),
                embedded,
                "{noise:?}"
            );
            seen.push(first);
        }
    }

    /// The mirror view is the mean of the image's embedding and that of its mirror image,
    /// whatever the batch holds around it.
    #[test]
    fn mirror_view_is_the_mean_of_an_image_and_its_mirror() {
        let n = 24;
        let raw: Vec<u8> = (0..n * 784).map(|i| ((i * 7919) % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let mut flipped = raw.clone();
        for row in flipped.chunks_exact_mut(28) {
            row.reverse();
        }
        let set = ImageSet::new(raw, labels.clone(), 1, 28, 28).unwrap();
        let mirrored = ImageSet::new(flipped, labels, 1, 28, 28).unwrap();
        let spec = ModelSpec::siamese(crate::data::DatasetKind::Mnist, 10);
        let mut r = Replica::new(spec, &spec.init(3), &Device::Cpu).unwrap();
        let ids = [5, 0, 17];
        let plain = r.embed(&set, &ids, TestAugment::None).unwrap();
        let other = r.embed(&mirrored, &ids, TestAugment::None).unwrap();
        let both = r.embed(&set, &ids, TestAugment::Mirror).unwrap();
        assert_ne!(plain, other, "the test images are mirror-symmetric");
        for ((p, o), b) in plain.iter().zip(&other).zip(&both) {
            assert!(
                (b - (p + o) / 2.0).abs() <= 1e-6 * (1.0 + b.abs()),
                "{b} {p} {o}"
            );
        }
        // One image alone gets what it gets in company.
        let alone = r.embed(&set, &[0], TestAugment::Mirror).unwrap();
        assert_eq!(alone[..], both[10..20]);
    }
}
