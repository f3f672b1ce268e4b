//! Training-image augmentation: a random shift (padding with black and cropping back, the
//! usual "random crop with padding") and a horizontal mirror, decided by a 64-bit key so that
//! whoever computes a pair's gradient draws the same transformation.

use serde::{Deserialize, Serialize};

/// Which augmentation training images get.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// None (the paper).
    #[default]
    None,
    /// Pad by an eighth of the side and crop back at a random offset.
    Crop,
    /// The crop, and a horizontal mirror of half the images.
    CropFlip,
    /// A horizontal mirror of half the images, no shift: a milder regulariser than the crop.
    Flip,
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of one word.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one image of one training pair: the run's seed, the pair and the side (0 the
/// anchor, 1 its partner). Within an epoch every anchor occurs once, and its partner is drawn
/// afresh each epoch, so an image meets a new transformation each time it is trained on.
pub fn augment_key(seed: u64, a: u32, b: u32, same: bool, side: u8) -> u64 {
    let pair = (u64::from(a) << 32) | u64::from(b);
    mix(mix(mix(seed) ^ pair) ^ (u64::from(same) << 1 | u64::from(side)))
}

impl Augment {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Augment::None => "none",
            Augment::Crop => "crop",
            Augment::CropFlip => "crop-flip",
            Augment::Flip => "flip",
        }
    }

    /// Transforms one image (`channels x side x side` values, row-major, 0 = black) in place
    /// as `key` decides; `scratch` is reused between calls.
    pub fn apply(
        self,
        key: u64,
        image: &mut [f32],
        (channels, height, width): (usize, usize, usize),
        scratch: &mut Vec<f32>,
    ) {
        if self == Augment::None || image.len() != channels * height * width {
            return;
        }
        // Separate bit fields of one hash: the two offsets and the mirror bit.
        let pad = match self {
            Augment::Flip => 0,
            _ => (height.min(width) / 8) as i64,
        };
        let span = (2 * pad + 1) as u64;
        let dy = ((key & 0xFFFF) % span) as i64 - pad;
        let dx = (((key >> 16) & 0xFFFF) % span) as i64 - pad;
        let flip = matches!(self, Augment::CropFlip | Augment::Flip) && (key >> 40) & 1 == 1;
        if dx == 0 && dy == 0 && !flip {
            return;
        }
        scratch.clear();
        scratch.extend_from_slice(image);
        let (h, w) = (height as i64, width as i64);
        for c in 0..channels {
            let plane = c * height * width;
            for y in 0..h {
                let sy = y + dy;
                for x in 0..w {
                    let sx0 = x + dx;
                    // Mirror the shifted image: output column x reads shifted column w-1-x.
                    let sx = if flip { (w - 1 - x) + dx } else { sx0 };
                    let v = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                        scratch[plane + (sy * w + sx) as usize]
                    } else {
                        0.0
                    };
                    image[plane + (y * w + x) as usize] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, s: usize) -> Vec<f32> {
        (0..c * s * s).map(|i| i as f32 + 1.0).collect()
    }

    #[test]
    fn none_and_a_zero_shift_leave_the_image_alone() {
        let mut img = ramp(3, 32);
        let orig = img.clone();
        Augment::None.apply(12345, &mut img, (3, 32, 32), &mut Vec::new());
        assert_eq!(img, orig);
        // dy = (key & 0xFFFF) % 9 - 4 = 0, dx likewise from the next 16 bits, no flip.
        let key = 4 | (4 << 16);
        Augment::CropFlip.apply(key, &mut img, (3, 32, 32), &mut Vec::new());
        assert_eq!(img, orig);
    }

    #[test]
    fn a_shift_moves_pixels_and_fills_black() {
        let (c, s) = (1, 8);
        let mut img = ramp(c, s);
        let orig = img.clone();
        // pad 1: dy = (key & 0xFFFF) % 3 - 1 = +1, dx = ((key >> 16) & 0xFFFF) % 3 - 1 = -1.
        let key = 2;
        Augment::Crop.apply(key, &mut img, (c, s, s), &mut Vec::new());
        for y in 0..s {
            for x in 0..s {
                let (sy, sx) = (y as i64 + 1, x as i64 - 1);
                let want = if sy < s as i64 && sx >= 0 {
                    orig[sy as usize * s + sx as usize]
                } else {
                    0.0
                };
                assert_eq!(img[y * s + x], want, "({y}, {x})");
            }
        }
    }

    #[test]
    fn the_flip_mirrors_every_channel() {
        let (c, s) = (3, 8);
        let mut img = ramp(c, s);
        let orig = img.clone();
        let key = 1 | (1 << 16) | (1 << 40);
        Augment::CropFlip.apply(key, &mut img, (c, s, s), &mut Vec::new());
        for ch in 0..c {
            for y in 0..s {
                for x in 0..s {
                    let i = ch * s * s + y * s + x;
                    assert_eq!(img[i], orig[ch * s * s + y * s + (s - 1 - x)]);
                }
            }
        }
        // Crop alone never mirrors, whatever the key.
        let mut img = orig.clone();
        Augment::Crop.apply(key, &mut img, (c, s, s), &mut Vec::new());
        assert_eq!(img, orig);
    }

    #[test]
    fn flip_mirrors_half_the_images_and_never_shifts() {
        let (c, s) = (3, 8);
        let orig = ramp(c, s);
        let mirrored: Vec<f32> = (0..c * s * s)
            .map(|i| orig[i - i % s + (s - 1 - i % s)])
            .collect();
        let mut flipped = 0;
        for i in 0..1000u32 {
            let key = augment_key(3, i, i + 7, i % 2 == 0, 0);
            let mut img = orig.clone();
            Augment::Flip.apply(key, &mut img, (c, s, s), &mut Vec::new());
            // Either untouched or exactly mirrored: no offset is ever drawn.
            if img == mirrored {
                flipped += 1;
            } else {
                assert_eq!(img, orig, "key {key:#x}");
            }
        }
        assert!((400..600).contains(&flipped), "{flipped} of 1000 mirrored");
    }

    #[test]
    fn keys_differ_by_side_pair_and_seed() {
        let k = augment_key(1, 10, 20, true, 0);
        assert_ne!(k, augment_key(1, 10, 20, true, 1));
        assert_ne!(k, augment_key(1, 10, 21, true, 0));
        assert_ne!(k, augment_key(1, 20, 10, true, 0));
        assert_ne!(k, augment_key(1, 10, 20, false, 0));
        assert_ne!(k, augment_key(2, 10, 20, true, 0));
        assert_eq!(k, augment_key(1, 10, 20, true, 0));
    }

    #[test]
    fn offsets_cover_the_whole_range_evenly_enough() {
        let mut counts = [0usize; 9];
        for i in 0..9000u32 {
            let key = augment_key(7, i, i + 1, false, 0);
            counts[((key & 0xFFFF) % 9) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }
}
