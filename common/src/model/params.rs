//! The model's parameters as one flat `f32` vector with a fixed, named layout.
//!
//! A flat vector is what crosses the wire, what Adam updates and what NCCL all-reduces; the
//! names (`conv1.weight`, ...) are Candle's idiom and become the safetensors keys.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::ModelError;
use super::conv_geom::ConvGeom;
use crate::data::DatasetKind;

/// Which network the parameters belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    /// SN-LeNet-5: an embedding of `width` values plus the learned similarity unit (a, b).
    Siamese {
        /// Embedding width (the paper's default is 10).
        width: usize,
    },
    /// Plain LeNet-5 classifier: 10 logits, for the paper's comparison table.
    Classifier,
}

/// Input geometry and head: everything that fixes the parameter layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// Input channels (1 for MNIST-like, 3 for CIFAR-10).
    pub channels: usize,
    /// Input side (28 or 32).
    pub size: usize,
    /// The output part of the network.
    pub head: Head,
}

/// One named parameter tensor inside the flat vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Checkpoint key, e.g. `conv1.weight`.
    pub name: &'static str,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Start offset in the flat vector.
    pub offset: usize,
    /// Fan-in that sets the initialisation bound.
    fan_in: usize,
}

impl ParamInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor holds no values (never, for this model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Widest embedding a layout may ask for (`--embedding`'s bound).
pub const MAX_EMBEDDING: usize = 4096;

impl ModelSpec {
    /// Checks a layout that came from outside (a peer, a file) against what this build can run:
    /// one of the datasets' image shapes and an embedding width within bounds, so that no
    /// arithmetic on it underflows or allocates without limit.
    pub fn validate(&self) -> Result<(), ModelError> {
        let why = match (self.channels, self.size, self.head) {
            (1, 28, _) | (3, 32, _) => match self.head {
                Head::Siamese { width } if width == 0 || width > MAX_EMBEDDING => Some(format!(
                    "an embedding of {width} values (1 to {MAX_EMBEDDING})"
                )),
                _ => None,
            },
            (c, s, _) => Some(format!(
                "{c}x{s}x{s} inputs (this build runs 1x28x28 and 3x32x32)"
            )),
        };
        match why {
            None => Ok(()),
            Some(why) => Err(ModelError::BadSpec {
                spec: format!("{self:?}"),
                why,
            }),
        }
    }

    /// SN-LeNet-5 for a dataset's image shape with the paper's embedding width.
    pub fn siamese(kind: DatasetKind, width: usize) -> Self {
        let (channels, size, _) = kind.image_shape();
        ModelSpec {
            channels,
            size,
            head: Head::Siamese { width },
        }
    }

    /// The plain LeNet-5 classifier for a dataset's image shape.
    pub fn classifier(kind: DatasetKind) -> Self {
        let (channels, size, _) = kind.image_shape();
        ModelSpec {
            channels,
            size,
            head: Head::Classifier,
        }
    }

    /// First stage: 28x28 inputs are padded by 2 so both datasets reach 16x5x5 after stage 2.
    pub fn conv1(&self) -> ConvGeom {
        let pad = if self.size == 28 { 2 } else { 0 };
        ConvGeom {
            cin: self.channels,
            h: self.size,
            w: self.size,
            cout: 6,
            k: 5,
            pad,
        }
    }

    /// Second stage: 6x14x14 -> 16x10x10 -> 16x5x5.
    pub fn conv2(&self) -> ConvGeom {
        let c1 = self.conv1();
        ConvGeom {
            cin: 6,
            h: c1.out_h(),
            w: c1.out_w(),
            cout: 16,
            k: 5,
            pad: 0,
        }
    }

    /// Width of the last linear layer.
    pub fn out_width(&self) -> usize {
        match self.head {
            Head::Siamese { width } => width,
            Head::Classifier => 10,
        }
    }

    /// The parameter layout, in flat-vector order.
    pub fn params(&self) -> Vec<ParamInfo> {
        let c2 = self.conv2();
        let flat = c2.cout * c2.out_h() * c2.out_w();
        let e = self.out_width();
        let [h1, h2] = super::lenet::HIDDEN;
        let mut list: Vec<(&'static str, Vec<usize>, usize)> = vec![
            (
                "conv1.weight",
                vec![6, self.channels, 5, 5],
                self.channels * 25,
            ),
            ("conv1.bias", vec![6], self.channels * 25),
            ("conv2.weight", vec![16, 6, 5, 5], 150),
            ("conv2.bias", vec![16], 150),
            ("fc1.weight", vec![h1, flat], flat),
            ("fc1.bias", vec![h1], flat),
            ("fc2.weight", vec![h2, h1], h1),
            ("fc2.bias", vec![h2], h1),
            ("fc3.weight", vec![e, h2], h2),
            ("fc3.bias", vec![e], h2),
        ];
        if let Head::Siamese { .. } = self.head {
            list.push(("out.weight", vec![1], 1));
            list.push(("out.bias", vec![1], 1));
        }
        let mut offset = 0;
        list.into_iter()
            .map(|(name, shape, fan_in)| {
                let info = ParamInfo {
                    name,
                    offset,
                    shape,
                    fan_in,
                };
                offset += info.len();
                info
            })
            .collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(ParamInfo::len).sum()
    }

    /// Seeded initial weights: PyTorch's defaults (uniform within 1/sqrt(fan_in)) for conv and
    /// linear layers; the similarity unit starts at s = sigmoid(2 - 2d).
    ///
    /// The similarity slope starts negative on purpose: a larger distance must mean a smaller
    /// similarity, and a unit that starts with the wrong sign spends epochs flipping it.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1e7e_5000_0001);
        let mut out = Vec::with_capacity(self.num_params());
        for p in self.params() {
            match p.name {
                "out.weight" => out.push(-2.0),
                "out.bias" => out.push(2.0),
                // Unused by the siamese head (see `lenet::forward`); zero so checkpoints say so.
                "fc3.bias" if matches!(self.head, Head::Siamese { .. }) => {
                    out.extend(std::iter::repeat_n(0.0, p.len()))
                }
                _ => {
                    let bound = 1.0 / (p.fan_in as f32).sqrt();
                    for _ in 0..p.len() {
                        // 24 random bits give every representable step in [0, 1).
                        let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                        out.push((2.0 * u - 1.0) * bound);
                    }
                }
            }
        }
        out
    }

    /// Checks that a flat vector has this model's length.
    pub fn check_len(&self, weights: &[f32], what: &str) -> Result<(), ModelError> {
        let want = self.num_params();
        if weights.len() != want {
            return Err(ModelError::WrongLength {
                what: what.to_string(),
                got: weights.len(),
                want,
            });
        }
        Ok(())
    }

    /// Writes weights as safetensors with the layout's names, atomically (temp file + rename).
    pub fn save(&self, weights: &[f32], path: &Path) -> Result<(), ModelError> {
        self.check_len(weights, "weights to save")?;
        let mut map = HashMap::new();
        for p in self.params() {
            let t = Tensor::from_slice(
                &weights[p.offset..p.offset + p.len()],
                p.shape.as_slice(),
                &Device::Cpu,
            )?;
            map.insert(p.name.to_string(), t);
        }
        let tmp = path.with_extension("safetensors.partial");
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Reads weights saved by [`ModelSpec::save`], checking every name and shape.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, ModelError> {
        let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            ModelError::Checkpoint {
                path: path.to_path_buf(),
                why: e.to_string(),
            }
        })?;
        let mut out = Vec::with_capacity(self.num_params());
        for p in self.params() {
            let t = map.get(p.name).ok_or_else(|| ModelError::Checkpoint {
                path: path.to_path_buf(),
                why: format!("no tensor named {}", p.name),
            })?;
            if t.dims() != p.shape.as_slice() {
                return Err(ModelError::Checkpoint {
                    path: path.to_path_buf(),
                    why: format!(
                        "{} has shape {:?}, this model needs {:?}",
                        p.name,
                        t.dims(),
                        p.shape
                    ),
                });
            }
            out.extend(
                t.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }
}
