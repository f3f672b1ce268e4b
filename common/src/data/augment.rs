//! Training-image augmentation: a random shift (padding with black and cropping back, the
//! usual "random crop with padding"), a horizontal mirror, and on top of those either a black
//! square (cutout) or a change of brightness and contrast (colour jitter), decided by a 64-bit
//! key so that whoever computes a pair's gradient draws the same transformation.

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
    /// Crop-flip, then a black square of a quarter of the side at a random centre (cutout).
    CropFlipCutout,
    /// Crop-flip, then brightness and contrast each scaled by a random factor in [0.8, 1.2].
    CropFlipJitter,
}

/// How test images are seen when a run is evaluated: as they are (the paper), or each as the
/// mean of its embedding and its mirror's (test-time augmentation). Training never sees this.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestAugment {
    /// Each image once, as it is (the paper).
    #[default]
    None,
    /// Each image's embedding is the mean of its own and its horizontal mirror's.
    Mirror,
}

impl TestAugment {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            TestAugment::None => "none",
            TestAugment::Mirror => "mirror",
        }
    }
}

/// Mirrors every row of an image (`channels x height x width` values, row-major) in place.
pub fn mirror(image: &mut [f32], width: usize) {
    for row in image.chunks_exact_mut(width.max(1)) {
        row.reverse();
    }
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
            Augment::CropFlipCutout => "crop-flip-cutout",
            Augment::CropFlipJitter => "crop-flip-jitter",
        }
    }

    /// Whether the mode shifts images, so that `--crop-pad` means something to it.
    pub fn crops(self) -> bool {
        !matches!(self, Augment::None | Augment::Flip)
    }

    /// Transforms one image (`channels x side x side` values, row-major, 0 = black) in place
    /// as `key` decides; the crop shifts by at most `crop_pad` pixels (none: an eighth of the
    /// side); `scratch` is reused between calls.
    pub fn apply(
        self,
        key: u64,
        image: &mut [f32],
        (channels, height, width): (usize, usize, usize),
        crop_pad: Option<u32>,
        scratch: &mut Vec<f32>,
    ) {
        if self == Augment::None || image.len() != channels * height * width {
            return;
        }
        let pad = match self.crops() {
            true => crop_pad.map_or_else(|| eighth_of_side(height, width), i64::from),
            false => 0,
        };
        self.shift_and_mirror(key, image, (channels, height, width), pad, scratch);
        match self {
            Augment::CropFlipCutout => cutout(key, image, (channels, height, width)),
            Augment::CropFlipJitter => jitter(key, image),
            _ => {}
        }
    }

    fn shift_and_mirror(
        self,
        key: u64,
        image: &mut [f32],
        (channels, height, width): (usize, usize, usize),
        pad: i64,
        scratch: &mut Vec<f32>,
    ) {
        // Separate bit fields of one hash: the two offsets and the mirror bit.
        let span = (2 * pad + 1) as u64;
        let dy = ((key & 0xFFFF) % span) as i64 - pad;
        let dx = (((key >> 16) & 0xFFFF) % span) as i64 - pad;
        let flip = self != Augment::Crop && (key >> 40) & 1 == 1; // None never gets here
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

/// p of the spec (3.4): the crop's default largest offset, and half the cutout's side.
fn eighth_of_side(height: usize, width: usize) -> i64 {
    (height.min(width) / 8) as i64
}

/// Blacks out a square of a quarter of the side in every channel. Its centre is anywhere in
/// the image, so the square is sometimes clipped by an edge (DeVries and Taylor's cutout).
fn cutout(key: u64, image: &mut [f32], (channels, height, width): (usize, usize, usize)) {
    // A second hash, so that the centre is independent of the shift and the mirror.
    let k = mix(key ^ 0xC0_70_07);
    let half = eighth_of_side(height, width);
    let cy = ((k & 0xFFFF) % height as u64) as i64;
    let cx = (((k >> 16) & 0xFFFF) % width as u64) as i64;
    let rows = (cy - half).max(0) as usize..(cy + half).min(height as i64) as usize;
    let cols = (cx - half).max(0) as usize..(cx + half).min(width as i64) as usize;
    for c in 0..channels {
        for y in rows.clone() {
            let row = (c * height + y) * width;
            image[row + cols.start..row + cols.end].fill(0.0);
        }
    }
}

/// Scales contrast (about the image's mean) and then brightness, each by its own factor in
/// [0.8, 1.2], and clips to [0, 1], the range of the stored pixels.
fn jitter(key: u64, image: &mut [f32]) {
    let k = mix(key ^ 0x717_7E2);
    let factor = |bits: u64| 0.8 + 0.4 * ((bits & 0xFFFF) as f32 / 65535.0);
    let (contrast, brightness) = (factor(k), factor(k >> 16));
    // The mean over all channels keeps the colours' balance, as a grey-level contrast would.
    let mean = image.iter().sum::<f32>() / image.len().max(1) as f32;
    for v in image.iter_mut() {
        *v = (((*v - mean) * contrast + mean) * brightness).clamp(0.0, 1.0);
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
        Augment::None.apply(12345, &mut img, (3, 32, 32), None, &mut Vec::new());
        assert_eq!(img, orig);
        // dy = (key & 0xFFFF) % 9 - 4 = 0, dx likewise from the next 16 bits, no flip.
        let key = 4 | (4 << 16);
        Augment::CropFlip.apply(key, &mut img, (3, 32, 32), None, &mut Vec::new());
        assert_eq!(img, orig);
    }

    #[test]
    fn a_shift_moves_pixels_and_fills_black() {
        let (c, s) = (1, 8);
        let mut img = ramp(c, s);
        let orig = img.clone();
        // pad 1: dy = (key & 0xFFFF) % 3 - 1 = +1, dx = ((key >> 16) & 0xFFFF) % 3 - 1 = -1.
        let key = 2;
        Augment::Crop.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
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
    fn crop_pad_bounds_the_shift_and_its_default_is_an_eighth_of_the_side() {
        let (c, s) = (1, 32);
        let orig = ramp(c, s);
        // The image's top-left value moves to (-dy, -dx); its shift is read back from there.
        let shift = |img: &[f32]| {
            let at = img.iter().position(|&v| v == orig[s * 8 + 8]).unwrap();
            ((at / s) as i64 - 8, (at % s) as i64 - 8)
        };
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400u32 {
            let key = augment_key(5, i, i + 1, true, 0);
            let mut padded = orig.clone();
            Augment::Crop.apply(key, &mut padded, (c, s, s), Some(2), &mut Vec::new());
            let (dy, dx) = shift(&padded);
            assert!(dy.abs() <= 2 && dx.abs() <= 2, "key {key:#x}: {dy}, {dx}");
            seen.insert(dy);
            // Naming the default pad (32 / 8 = 4) is the same as naming none.
            let (mut named, mut default) = (orig.clone(), orig.clone());
            Augment::CropFlip.apply(key, &mut named, (c, s, s), Some(4), &mut Vec::new());
            Augment::CropFlip.apply(key, &mut default, (c, s, s), None, &mut Vec::new());
            assert_eq!(named, default, "key {key:#x}");
        }
        assert_eq!(seen.len(), 5, "every offset in -2..=2 drawn: {seen:?}");
        // The mirror alone ignores a pad.
        let key = augment_key(5, 1, 2, true, 0);
        let (mut with, mut without) = (orig.clone(), orig.clone());
        Augment::Flip.apply(key, &mut with, (c, s, s), Some(3), &mut Vec::new());
        Augment::Flip.apply(key, &mut without, (c, s, s), None, &mut Vec::new());
        assert_eq!(with, without);
    }

    #[test]
    fn the_flip_mirrors_every_channel() {
        let (c, s) = (3, 8);
        let mut img = ramp(c, s);
        let orig = img.clone();
        let key = 1 | (1 << 16) | (1 << 40);
        Augment::CropFlip.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
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
        Augment::Crop.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
        assert_eq!(img, orig);
    }

    #[test]
    fn mirror_reverses_every_row_of_every_channel() {
        let (c, s) = (3, 8);
        let orig = ramp(c, s);
        let mut img = orig.clone();
        mirror(&mut img, s);
        for i in 0..c * s * s {
            assert_eq!(img[i], orig[i - i % s + (s - 1 - i % s)]);
        }
        mirror(&mut img, s);
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
            Augment::Flip.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
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
    fn cutout_blacks_a_clipped_square_of_the_crop_flip_image() {
        let (c, s) = (3, 32);
        let (mut clipped, mut whole) = (0, 0);
        for i in 0..500u32 {
            let key = augment_key(9, i, i + 3, true, 1);
            let mut base = ramp(c, s);
            Augment::CropFlip.apply(key, &mut base, (c, s, s), None, &mut Vec::new());
            let mut img = ramp(c, s);
            Augment::CropFlipCutout.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
            // Pixels the cutout changed: black now, not black in the crop-flip image.
            let cut: Vec<usize> = (0..s * s).filter(|&p| img[p] != base[p]).collect();
            for ch in 0..c {
                for p in 0..s * s {
                    let (i, want) = (
                        ch * s * s + p,
                        if cut.contains(&p) {
                            0.0
                        } else {
                            base[ch * s * s + p]
                        },
                    );
                    assert_eq!(img[i], want, "key {key:#x}, channel {ch}, pixel {p}");
                }
            }
            if cut.is_empty() {
                // The square fell on the crop's border, black already.
                clipped += 1;
                continue;
            }
            let (ys, xs): (Vec<usize>, Vec<usize>) = cut.iter().map(|p| (p / s, p % s)).unzip();
            let (h, w) = (
                ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1,
                xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1,
            );
            // Within one square of at most 8 on a side (pixels of the crop's black border stay
            // black, so they are not counted).
            assert!(
                h <= 8 && w <= 8 && cut.len() <= h * w,
                "{h}x{w}, {}",
                cut.len()
            );
            if cut.len() == 64 {
                whole += 1;
            } else {
                clipped += 1;
            }
        }
        assert!(
            whole > 200 && clipped > 50,
            "{whole} whole, {clipped} clipped"
        );
    }

    #[test]
    fn jitter_scales_contrast_and_brightness_within_range() {
        let (c, s) = (3, 8);
        let orig: Vec<f32> = (0..c * s * s)
            .map(|i| (i % 17) as f32 / 20.0 + 0.05)
            .collect();
        let (mut brighter, mut darker) = (0, 0);
        for i in 0..500u32 {
            let key = augment_key(4, i, i + 1, false, 0);
            let mut base = orig.clone();
            Augment::CropFlip.apply(key, &mut base, (c, s, s), None, &mut Vec::new());
            let mut img = orig.clone();
            Augment::CropFlipJitter.apply(key, &mut img, (c, s, s), None, &mut Vec::new());
            assert!(img.iter().all(|v| (0.0..=1.0).contains(v)), "key {key:#x}");
            let (a, b) = (base.iter().sum::<f32>(), img.iter().sum::<f32>());
            // Contrast keeps the sum but for clipping; brightness scales it by 0.8 to 1.2.
            assert!(b >= 0.6 * a && b <= 1.4 * a, "key {key:#x}: {a} -> {b}");
            // Both scalings are increasing maps: no two pixels change order.
            for (i, j) in (1..base.len()).map(|i| (i - 1, i)) {
                let (lo, hi) = if base[i] <= base[j] { (i, j) } else { (j, i) };
                assert!(img[lo] <= img[hi], "key {key:#x}: pixels {i}, {j}");
            }
            if b > 1.05 * a {
                brighter += 1;
            } else if b < 0.95 * a {
                darker += 1;
            }
            let mut again = orig.clone();
            Augment::CropFlipJitter.apply(key, &mut again, (c, s, s), None, &mut Vec::new());
            assert_eq!(img, again, "the key alone decides");
        }
        assert!(
            brighter > 100 && darker > 100,
            "{brighter} brighter, {darker} darker"
        );
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
