//! A trained SN-LeNet-5 read from a checkpoint (or a weights-only file): its input shape, the
//! embedding of images, and the similarity of two embeddings, exactly as training evaluates.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safetensors::SafeTensors;

use super::InferenceError;
use crate::data::{TestAugment, mirror};
use crate::model::{Head, ModelError, ModelSpec, Network};
use crate::train::eval::similarity;

/// Similarity above which two images are called the same class (the pair accuracy's rule).
pub const THRESHOLD: f32 = 0.5;

/// Images per forward pass: bounds the memory of a large `embed`.
const EMBED_BATCH: usize = 512;

/// The metadata key checkpoints keep their JSON header under.
const METADATA_KEY: &str = "siamese-cluster";

/// Channels, height and width of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// Values in one image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether an image of this shape holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One image's 8-bit pixels in CHW order, as the datasets hold them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixels {
    /// Its shape.
    pub shape: ImageShape,
    /// `shape.len()` bytes.
    pub data: Vec<u8>,
}

impl Pixels {
    /// Appends the pixels as the model's input: byte / 255 (docs/spec.md, 1.1).
    pub fn push_f32(&self, out: &mut Vec<f32>) {
        out.extend(self.data.iter().map(|&v| f32::from(v) / 255.0));
    }
}

/// A trained siamese model on the CPU.
pub struct TrainedModel {
    path: PathBuf,
    spec: ModelSpec,
    net: Network,
    /// The similarity unit's slope and offset, `s = sigmoid(a d + b)`.
    unit: (f32, f32),
    /// How each image is seen: as it is, or averaged with its mirror (`--test-augment`).
    views: TestAugment,
}

impl TrainedModel {
    /// Reads the model from a checkpoint or weights file, checking every tensor's name and shape.
    pub fn load(path: &Path) -> Result<Self, InferenceError> {
        let bad = |why: String| InferenceError::Weights {
            path: path.to_path_buf(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|source| InferenceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let spec = spec_of(&bytes).map_err(bad)?;
        let weights = spec.load(path).map_err(|e| match e {
            ModelError::Checkpoint { why, .. } => bad(why),
            other => InferenceError::Model(other),
        })?;
        let net = Network::new(spec, &weights, &Device::Cpu)?;
        let unit = net.similarity_unit()?;
        Ok(TrainedModel {
            path: path.to_path_buf(),
            spec,
            net,
            unit,
            views: TestAugment::None,
        })
    }

    /// Sees every image as `views` says from now on: with [`TestAugment::Mirror`], an
    /// embedding is the mean of the image's and its mirror's, as a run tested with
    /// `--test-augment mirror` scores its test pairs.
    pub fn with_views(mut self, views: TestAugment) -> Self {
        self.views = views;
        self
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What one input image must be.
    pub fn input_shape(&self) -> ImageShape {
        ImageShape {
            channels: self.spec.channels,
            height: self.spec.size,
            width: self.spec.size,
        }
    }

    /// Values in one embedding.
    pub fn width(&self) -> usize {
        self.spec.out_width()
    }

    /// Embeddings of `count` images given as the model's input (values in [0, 1], CHW, one
    /// image after another): `count x width`, row-major.
    pub fn embed_values(&self, values: &[f32], count: usize) -> Result<Vec<f32>, InferenceError> {
        let shape = self.input_shape();
        if values.len() != count * shape.len() {
            return Err(InferenceError::Input {
                input: format!("{count} images"),
                why: format!(
                    "{} values given, {count} images of {}x{}x{} need {}",
                    values.len(),
                    shape.channels,
                    shape.height,
                    shape.width,
                    count * shape.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(count * self.width());
        for chunk in values.chunks(EMBED_BATCH * shape.len()) {
            let n = chunk.len() / shape.len();
            let x = Tensor::from_slice(
                chunk,
                (n, shape.channels, shape.height, shape.width),
                &Device::Cpu,
            )
            .map_err(ModelError::from)?;
            let mut e = self.net.embed(&x)?;
            if self.views == TestAugment::Mirror {
                let mut flipped = chunk.to_vec();
                mirror(&mut flipped, shape.width);
                let x = Tensor::from_vec(
                    flipped,
                    (n, shape.channels, shape.height, shape.width),
                    &Device::Cpu,
                )
                .map_err(ModelError::from)?;
                let m = self.net.embed(&x)?;
                e = (e + m).and_then(|t| t * 0.5).map_err(ModelError::from)?;
            }
            out.extend(
                e.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(ModelError::from)?,
            );
        }
        Ok(out)
    }

    /// Embeddings of images already checked against [`Self::input_shape`].
    pub fn embed(&self, images: &[Pixels]) -> Result<Vec<f32>, InferenceError> {
        let shape = self.input_shape();
        let mut values = Vec::with_capacity(images.len() * shape.len());
        for p in images {
            if p.shape != shape {
                return Err(InferenceError::Input {
                    input: format!(
                        "{}x{}x{} image",
                        p.shape.channels, p.shape.height, p.shape.width
                    ),
                    why: format!(
                        "the model takes {}x{}x{}",
                        shape.channels, shape.height, shape.width
                    ),
                });
            }
            p.push_f32(&mut values);
        }
        self.embed_values(&values, images.len())
    }

    /// Similarity and distance of two embeddings, as the run's evaluation computes them.
    pub fn compare(&self, a: &[f32], b: &[f32]) -> (f32, f32) {
        let d2: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let distance = (d2 + 1e-7).sqrt();
        (similarity(a, b, self.unit.0, self.unit.1), distance)
    }
}

/// The layout the file holds: from a checkpoint's header, else from the tensors' shapes.
fn spec_of(bytes: &[u8]) -> Result<ModelSpec, String> {
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    if let Some(json) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
    {
        let header: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("its {METADATA_KEY} header: {e}"))?;
        let spec: ModelSpec = serde_json::from_value(header["spec"].clone())
            .map_err(|e| format!("the model layout in its header: {e}"))?;
        return match spec.head {
            Head::Siamese { .. } => Ok(spec),
            Head::Classifier => Err("it holds a LeNet-5 classifier, not SN-LeNet-5".into()),
        };
    }
    // A weights-only file (ModelSpec::save): the shapes say the channels and embedding width.
    let tensors = metadata.tensors();
    let shape = |name: &str| tensors.get(name).map(|info| info.shape.clone());
    let conv1 = shape("conv1.weight").ok_or("no tensor named conv1.weight")?;
    let fc3 = shape("fc3.weight").ok_or("no tensor named fc3.weight")?;
    if shape("out.weight").is_none() {
        return Err("no tensor named out.weight: a classifier's weights, not SN-LeNet-5's".into());
    }
    let (channels, width) = match (conv1.as_slice(), fc3.as_slice()) {
        ([6, c, 5, 5], [e, 84]) => (*c, *e),
        _ => {
            return Err(format!(
                "conv1.weight is {conv1:?} and fc3.weight {fc3:?}; SN-LeNet-5 has [6, C, 5, 5] and [E, 84]"
            ));
        }
    };
    // The two input sides the model is built for (docs/spec.md, 1.1).
    let size = match channels {
        1 => 28,
        3 => 32,
        c => {
            return Err(format!(
                "conv1.weight takes {c} channels; SN-LeNet-5 takes 1 or 3"
            ));
        }
    };
    Ok(ModelSpec {
        channels,
        size,
        head: Head::Siamese { width },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    #[test]
    fn weights_only_files_give_their_layout_and_classifiers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, width) in [(DatasetKind::Mnist, 10), (DatasetKind::Cifar10, 3)] {
            let spec = ModelSpec::siamese(kind, width);
            let path = dir.path().join("w.safetensors");
            spec.save(&spec.init(1), &path).unwrap();
            let m = TrainedModel::load(&path).unwrap();
            assert_eq!(
                (m.input_shape().channels, m.width()),
                (spec.channels, width)
            );
            assert_eq!(m.input_shape().height, spec.size);
        }
        let classifier = ModelSpec::classifier(DatasetKind::Mnist);
        let path = dir.path().join("c.safetensors");
        classifier.save(&classifier.init(1), &path).unwrap();
        let e = TrainedModel::load(&path).err().unwrap().to_string();
        assert!(e.contains("out.weight"), "{e}");
        std::fs::write(&path, b"not safetensors").unwrap();
        let e = TrainedModel::load(&path).err().unwrap().to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }

    #[test]
    fn the_mirror_view_averages_an_image_with_its_mirror() {
        let spec = ModelSpec::siamese(DatasetKind::Cifar10, 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        spec.save(&spec.init(4), &path).unwrap();
        let values: Vec<f32> = (0..2 * 3072)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let mut flipped = values.clone();
        for row in flipped.chunks_exact_mut(32) {
            row.reverse();
        }
        let plain = TrainedModel::load(&path).unwrap();
        let (e, m) = (
            plain.embed_values(&values, 2).unwrap(),
            plain.embed_values(&flipped, 2).unwrap(),
        );
        assert_ne!(e, m, "the test images are mirror-symmetric");
        let both = plain.with_views(TestAugment::Mirror);
        let b = both.embed_values(&values, 2).unwrap();
        for ((b, e), m) in b.iter().zip(&e).zip(&m) {
            assert!(
                (b - (e + m) / 2.0).abs() <= 1e-6 * (1.0 + b.abs()),
                "{b} {e} {m}"
            );
        }
    }

    #[test]
    fn compare_matches_the_evaluation_and_a_wrong_shape_is_refused() {
        let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        spec.save(&spec.init(2), &path).unwrap();
        let m = TrainedModel::load(&path).unwrap();
        let a = [0.0f32; 10];
        let (s, d) = m.compare(&a, &a);
        // Initial unit: s = sigmoid(2 - 2d) with d = sqrt(1e-7).
        assert!(
            (s - 1.0 / (1.0 + (-(2.0 - 2.0 * d)).exp())).abs() < 1e-6,
            "{s}"
        );
        let wrong = Pixels {
            shape: ImageShape {
                channels: 3,
                height: 28,
                width: 28,
            },
            data: vec![0; 3 * 784],
        };
        assert!(m.embed(&[wrong]).is_err());
        assert!(m.embed_values(&[0.0; 5], 1).is_err());
    }
}
