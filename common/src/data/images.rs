//! In-memory image sets and the dataset pair (train + test).

use md5::{Digest, Md5};
use sha2::Sha256;

use super::{DataError, DatasetKind};

/// Images and labels of one split, kept as raw bytes (CHW per image, images contiguous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    images: Vec<u8>,
    labels: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
}

impl ImageSet {
    /// Builds a set, checking that `images` holds exactly one CHW image per label.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        let image_len = channels
            .checked_mul(height)
            .and_then(|x| x.checked_mul(width))
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                DataError::InvalidImageSet(format!(
                    "image shape {channels}x{height}x{width} is empty or too large"
                ))
            })?;
        if labels.len().checked_mul(image_len) != Some(images.len()) {
            return Err(DataError::InvalidImageSet(format!(
                "{} labels need {} image bytes of {channels}x{height}x{width}, got {}",
                labels.len(),
                labels.len().saturating_mul(image_len),
                images.len()
            )));
        }
        Ok(ImageSet {
            images,
            labels,
            channels,
            height,
            width,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes (and f32 values) per image: channels * height * width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Raw CHW bytes of image `i`; panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// All labels, one class index in 0..=9 per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Label of image `i`; panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// Shape of one image as (channels, height, width).
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Keeps only the first `n` images (no-op when `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * self.image_len());
        }
    }

    /// Writes the chosen images as f32 in [0, 1] (byte / 255), one after another.
    ///
    /// # Panics
    /// If `out.len() != indices.len() * image_len()` or an index is out of range;
    /// both are caller bugs, not data problems.
    pub fn fill_f32(&self, indices: &[u32], out: &mut [f32]) {
        let n = self.image_len();
        assert_eq!(
            out.len(),
            indices.len() * n,
            "fill_f32: output holds {} values, {} images of {n} need {}",
            out.len(),
            indices.len(),
            indices.len() * n
        );
        for (dst, &i) in out.chunks_exact_mut(n).zip(indices) {
            let start = i as usize * n;
            let src = &self.images[start..start + n];
            // Zipped equal-length slices let the compiler drop bounds checks and vectorise.
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f32::from(s) / 255.0;
            }
        }
    }

    fn hash_into(&self, h: &mut impl Digest) {
        for v in [self.channels, self.height, self.width, self.len()] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(&self.images);
        h.update(&self.labels);
    }
}

/// A dataset as loaded from disk: its kind and both official splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Which dataset this is.
    pub kind: DatasetKind,
    /// Official training split (train + validation images).
    pub train: ImageSet,
    /// Official test split.
    pub test: ImageSet,
}

impl Dataset {
    /// Hex md5 over kind, shapes, counts, pixels and labels: the data's fingerprint in a run's
    /// identity (checkpoints).
    pub fn digest(&self) -> String {
        let mut h = Md5::new();
        self.hash_into(&mut h);
        to_hex(&h.finalize())
    }

    /// Hex SHA-256 over `nonce` and everything [`Dataset::digest`] covers: the answer to a
    /// coordinator's challenge, which only a holder of the very same data can give (a fresh
    /// nonce each time, so an answer cannot be replayed or derived from the fingerprint).
    pub fn proof(&self, nonce: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update((nonce.len() as u64).to_le_bytes());
        h.update(nonce);
        self.hash_into(&mut h);
        to_hex(&h.finalize())
    }

    fn hash_into(&self, h: &mut impl Digest) {
        let name = self.kind.name().as_bytes();
        // Length prefix keeps the name from running into the numbers that follow.
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        self.train.hash_into(h);
        self.test.hash_into(h);
    }
}

/// Lower-case hex of a byte string.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ImageSet {
        ImageSet::new(vec![0, 255, 51, 102, 7, 8, 9, 10], vec![3, 9], 1, 2, 2).unwrap()
    }

    #[test]
    fn accessors_report_shape_and_contents() {
        let s = small();
        assert_eq!((s.len(), s.image_len(), s.shape()), (2, 4, (1, 2, 2)));
        assert!(!s.is_empty());
        assert_eq!(s.image(1), &[7, 8, 9, 10]);
        assert_eq!((s.labels(), s.label(0)), (&[3u8, 9][..], 3));
    }

    #[test]
    fn new_rejects_mismatched_lengths_and_empty_shapes() {
        let err = ImageSet::new(vec![0; 7], vec![1, 2], 1, 2, 2).unwrap_err();
        assert!(err.to_string().contains("got 7"), "{err}");
        assert!(ImageSet::new(vec![], vec![], 0, 2, 2).is_err());
        assert!(ImageSet::new(vec![], vec![], 1, 28, 28).unwrap().is_empty());
    }

    #[test]
    fn fill_f32_scales_the_chosen_images_in_order() {
        let s = small();
        let mut out = [f32::NAN; 12];
        s.fill_f32(&[1, 0, 1], &mut out);
        let want = [7, 8, 9, 10, 0, 255, 51, 102, 7, 8, 9, 10].map(|v| v as f32 / 255.0);
        assert_eq!(out, want);
        assert_eq!((out[4], out[5], out[6]), (0.0, 1.0, 0.2));
    }

    #[test]
    #[should_panic(expected = "fill_f32")]
    fn fill_f32_rejects_a_wrong_output_length() {
        small().fill_f32(&[0], &mut [0.0; 5]);
    }

    #[test]
    fn truncate_keeps_the_first_images() {
        let mut s = small();
        s.truncate(5);
        assert_eq!(s.len(), 2);
        s.truncate(1);
        assert_eq!((s.len(), s.image(0)), (1, &[0u8, 255, 51, 102][..]));
    }

    #[test]
    fn digest_changes_with_any_pixel_label_or_kind() {
        let ds = Dataset {
            kind: DatasetKind::Mnist,
            train: small(),
            test: small(),
        };
        let d = ds.digest();
        assert_eq!(d.len(), 32);
        assert_eq!(d, ds.clone().digest());
        let mut other = ds.clone();
        other.kind = DatasetKind::FashionMnist;
        assert_ne!(other.digest(), d);
        let mut other = ds.clone();
        other.test =
            ImageSet::new(vec![0, 255, 51, 102, 7, 8, 9, 11], vec![3, 9], 1, 2, 2).unwrap();
        assert_ne!(other.digest(), d);
        let mut other = ds.clone();
        other.train =
            ImageSet::new(vec![0, 255, 51, 102, 7, 8, 9, 10], vec![3, 8], 1, 2, 2).unwrap();
        assert_ne!(other.digest(), d);
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
