//! Full checkpoints: everything a run needs to continue exactly where it stopped, in one
//! safetensors file. The model's tensors keep their names (`conv1.weight`, ...), so the file is
//! also the trained weights; Adam's moments sit beside them as `adam.m.<name>` and
//! `adam.v.<name>`; the header's metadata holds the rest as JSON under `siamese-cluster`: the
//! format version, the run's identity, the model layout, the position (optimizer steps, epoch,
//! step within it), the running sums of the epoch in progress, Adam's settings and step count,
//! the finished epochs' records and the membership events so far. The best epoch's weights (for
//! `--select best-val` and `--patience`) sit beside them as `best.<name>`, and the epochs after
//! which a plateau divided the learning rate (`--lr-drops`) are in the header; the weights'
//! moving average (`--ema`), where the run keeps one, is `ema.<name>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::run_identity::RunIdentity;
use crate::aggregation::OptimizerState;
use crate::model::ModelSpec;
use crate::optim::{Adam, AdamConfig};
use crate::results::{EpochRecord, MembershipEvent};

/// Version of the checkpoint layout; a file of another version is refused.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// The metadata key of the JSON header.
const METADATA_KEY: &str = "siamese-cluster";

/// Where in the run a checkpoint was taken: always at a step boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Optimizer steps applied since the run began.
    pub steps: u64,
    /// The epoch in progress (1-based); past the last epoch once training is done.
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub step_in_epoch: usize,
}

/// The running sums of the epoch in progress, so a resumed epoch reports what an
/// uninterrupted one would have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Sum of the per-pair training losses so far.
    pub loss_sum: f64,
    /// Pairs classified correctly so far.
    pub correct: usize,
    /// Pairs trained so far.
    pub seen: usize,
    /// Training seconds so far.
    pub seconds: f64,
}

/// The weights after the epoch of highest validation accuracy so far: what `--select best-val`
/// tests and `--patience` counts from.
#[derive(Clone, Debug, PartialEq)]
pub struct BestWeights {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Its validation pair accuracy.
    pub val_accuracy: f64,
    /// The weights after it.
    pub params: Vec<f32>,
}

/// Where the best epoch's weights are, in the header (the tensors are `best.<name>`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct BestHeader {
    epoch: usize,
    val_accuracy: f64,
}

/// A run's whole state at a step boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// What must match to continue it.
    pub identity: RunIdentity,
    /// The model layout.
    pub spec: ModelSpec,
    /// Weights and Adam's state.
    pub state: OptimizerState,
    /// Where the run stood.
    pub position: Position,
    /// The epoch in progress.
    pub progress: EpochProgress,
    /// Records of the finished epochs.
    pub epochs: Vec<EpochRecord>,
    /// Workers joining and lost so far.
    pub membership: Vec<MembershipEvent>,
    /// The best epoch's weights so far (none before the first epoch ends).
    pub best: Option<BestWeights>,
    /// Epochs after which a plateau divided the learning rate by 10 (`--lr-drops`).
    pub lr_drops: Vec<usize>,
    /// The weights' moving average (`--ema`), where the run keeps one.
    pub average: Option<Vec<f32>>,
}

/// Why a checkpoint cannot be written, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be written or read.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `--resume PATH` names no file.
    #[error(
        "checkpoint {path} does not exist (--resume PATH needs one; --resume auto starts fresh without)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file cannot be parsed as a checkpoint.
    #[error(
        "checkpoint {path} is not a siamese-cluster checkpoint of format {CHECKPOINT_FORMAT}: {source}"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The safetensors or JSON parser's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is not a checkpoint of this format.
    #[error(
        "checkpoint {path} is not a siamese-cluster checkpoint of format {CHECKPOINT_FORMAT}: {why}"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The checkpoint belongs to another run.
    #[error(
        "checkpoint {path} is of another run: {}; resume with its settings, or start afresh with another --checkpoint",
        differences.join("; ")
    )]
    OtherRun {
        /// The file.
        path: PathBuf,
        /// Each field that differs.
        differences: Vec<String>,
    },
}

/// Everything but the tensors.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    identity: RunIdentity,
    spec: ModelSpec,
    position: Position,
    progress: EpochProgress,
    adam: AdamConfig,
    adam_steps: u64,
    epochs: Vec<EpochRecord>,
    membership: Vec<MembershipEvent>,
    #[serde(default)]
    best: Option<BestHeader>,
    #[serde(default)]
    lr_drops: Vec<usize>,
    /// Whether `ema.<name>` tensors hold a moving average of the weights.
    #[serde(default)]
    average: bool,
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Checkpoint {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            format: CHECKPOINT_FORMAT,
            identity: self.identity.clone(),
            spec: self.spec,
            position: self.position,
            progress: self.progress,
            adam: self.state.adam.config,
            adam_steps: self.state.adam.t,
            epochs: self.epochs.clone(),
            membership: self.membership.clone(),
            best: self.best.as_ref().map(|b| BestHeader {
                epoch: b.epoch,
                val_accuracy: b.val_accuracy,
            }),
            lr_drops: self.lr_drops.clone(),
            average: self.average.is_some(),
        };
        let adam = &self.state.adam;
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for p in self.spec.params() {
            let range = p.offset..p.offset + p.len();
            let best = self.best.as_ref().map(|b| ("best.", &b.params));
            let average = self.average.as_ref().map(|a| ("ema.", a));
            let all = [
                Some(("", &self.state.params)),
                Some(("adam.m.", &adam.m)),
                Some(("adam.v.", &adam.v)),
                best,
                average,
            ];
            for (prefix, values) in all.into_iter().flatten() {
                buffers.push((
                    format!("{prefix}{}", p.name),
                    p.shape.clone(),
                    le_bytes(&values[range.clone()]),
                ));
            }
        }
        let views = buffers.iter().filter_map(|(name, shape, bytes)| {
            // Shapes and byte lengths come from the layout itself, so a view always forms.
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .ok()
                .map(|v| (name.clone(), v))
        });
        // Serialising plain structs and well-formed views cannot fail.
        let json = serde_json::to_string(&header).unwrap_or_default();
        let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
        safetensors::serialize(views, Some(metadata)).unwrap_or_default()
    }

    /// Writes the checkpoint atomically: a crash mid-write leaves the previous one intact.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        crate::atomic_file::write_atomically(path, &self.to_bytes()).map_err(|source| {
            CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads a checkpoint, checking its format, layout and every tensor's shape.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CheckpointError::Missing {
                path: path.to_path_buf(),
            },
            _ => CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of the file at `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let bad = |why: String| CheckpointError::Format {
            path: path.to_path_buf(),
            why,
        };
        let unreadable =
            |e: Box<dyn std::error::Error + Send + Sync>| CheckpointError::Unreadable {
                path: path.to_path_buf(),
                source: e,
            };
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| unreadable(e.into()))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| bad(format!("no {METADATA_KEY:?} header (a weights-only file?)")))?;
        let header: Header = serde_json::from_str(json).map_err(|e| unreadable(e.into()))?;
        if header.format != CHECKPOINT_FORMAT {
            return Err(bad(format!("it is format {}", header.format)));
        }
        // The header steers the training that resumes from it: settings no run writes are
        // refused here rather than trained on.
        header
            .adam
            .check()
            .map_err(|why| bad(format!("its Adam settings are {why}")))?;
        let finished = header.position.epoch.saturating_sub(1);
        let increasing = header.lr_drops.windows(2).all(|w| w[0] < w[1]);
        if !increasing || header.lr_drops.iter().any(|&d| d == 0 || d > finished) {
            return Err(bad(format!(
                "its drops of the rate {:?} are not increasing epochs from 1 to the last finished, {finished}",
                header.lr_drops
            )));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| unreadable(e.into()))?;
        let n = header.spec.num_params();
        let (mut params, mut m, mut v) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let mut best = header.best.map(|_| vec![0.0; n]);
        let mut average = header.average.then(|| vec![0.0; n]);
        for p in header.spec.params() {
            let all = [
                Some(("", &mut params)),
                Some(("adam.m.", &mut m)),
                Some(("adam.v.", &mut v)),
                best.as_mut().map(|b| ("best.", b)),
                average.as_mut().map(|a| ("ema.", a)),
            ];
            for (prefix, out) in all.into_iter().flatten() {
                let name = format!("{prefix}{}", p.name);
                let t = tensors
                    .tensor(&name)
                    .map_err(|_| bad(format!("no tensor {name}")))?;
                if t.dtype() != Dtype::F32 || t.shape() != p.shape.as_slice() {
                    return Err(bad(format!(
                        "{name} is {:?} {:?}, the layout needs F32 {:?}",
                        t.dtype(),
                        t.shape(),
                        p.shape
                    )));
                }
                let (chunks, _) = t.data().as_chunks::<4>();
                for (o, c) in out[p.offset..p.offset + p.len()].iter_mut().zip(chunks) {
                    *o = f32::from_le_bytes(*c);
                }
            }
        }
        let adam = Adam {
            config: header.adam,
            m,
            v,
            t: header.adam_steps,
        };
        Ok(Checkpoint {
            identity: header.identity,
            spec: header.spec,
            state: OptimizerState { params, adam },
            position: header.position,
            progress: header.progress,
            epochs: header.epochs,
            membership: header.membership,
            best: header.best.zip(best).map(|(h, params)| BestWeights {
                epoch: h.epoch,
                val_accuracy: h.val_accuracy,
                params,
            }),
            lr_drops: header.lr_drops,
            average,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    fn sample() -> Checkpoint {
        let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
        let mut state = OptimizerState::new(spec.init(3), 1e-3);
        let grad: Vec<f32> = (0..spec.num_params())
            .map(|i| (i % 7) as f32 * 1e-3)
            .collect();
        state.apply(&grad).unwrap();
        Checkpoint {
            identity: RunIdentity {
                model_version: crate::model::MODEL_VERSION.into(),
                dataset: "mnist".into(),
                data_digest: "d".into(),
                seed: 3,
                batch_size: 64,
                micro_batch: 8,
                embedding: 10,
                lr: 1e-3,
                train_subset: Some(100),
                augment: crate::data::Augment::CropFlip,
                crop_pad: Some(2),
                weight_decay: 0.01,
                lr_schedule: crate::optim::LrSchedule::Cosine,
                dropout: 0.2,
                ema: 0.999,
                lr_drop_after: vec![4, 7],
                train_on_validation: true,
                schedule_epochs: Some(30),
            },
            best: Some(BestWeights {
                epoch: 1,
                val_accuracy: 0.75,
                params: spec.init(4),
            }),
            spec,
            state,
            position: Position {
                steps: 7,
                epoch: 2,
                step_in_epoch: 3,
            },
            progress: EpochProgress {
                loss_sum: 1.5,
                correct: 100,
                seen: 192,
                seconds: 0.25,
            },
            epochs: Vec::new(),
            membership: Vec::new(),
            lr_drops: vec![1],
            average: Some(spec.init(5)),
        }
    }

    #[test]
    fn a_checkpoint_without_a_best_epoch_or_an_average_reads_back_without_them() {
        let path = Path::new("c.safetensors");
        for c in [
            Checkpoint {
                best: None,
                ..sample()
            },
            Checkpoint {
                average: None,
                ..sample()
            },
        ] {
            assert_eq!(Checkpoint::from_bytes(&c.to_bytes(), path).unwrap(), c);
        }
    }

    #[test]
    fn round_trips_every_bit_and_reads_as_weights() {
        let c = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        c.write(&path).unwrap();
        assert_eq!(Checkpoint::read(&path).unwrap(), c);
        // The model's own loader sees the weights by their names.
        assert_eq!(c.spec.load(&path).unwrap(), c.state.params);
    }

    #[test]
    fn an_interrupted_write_leaves_the_previous_checkpoint_usable() {
        let first = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        first.write(&path).unwrap();
        let mut second = sample();
        second.position.steps = 8;
        let bytes = second.to_bytes();
        // A write that dies halfway: the temporary file holds half, the rename never happens.
        let err = crate::atomic_file::write_atomically_with(&path, |f| {
            std::io::Write::write_all(f, &bytes[..bytes.len() / 2])?;
            Err(std::io::Error::other("killed halfway"))
        });
        assert!(err.is_err());
        assert!(crate::atomic_file::temporary_path(&path).exists());
        assert_eq!(Checkpoint::read(&path).unwrap(), first);
        // The half-written file itself is refused with a clear error, not a panic.
        let half = crate::atomic_file::temporary_path(&path);
        let e = Checkpoint::read(&half).unwrap_err().to_string();
        assert!(e.contains("not a siamese-cluster checkpoint"), "{e}");
    }

    #[test]
    fn weights_only_and_garbage_files_are_refused() {
        let c = sample();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        c.spec.save(&c.state.params, &weights).unwrap();
        let e = Checkpoint::read(&weights).unwrap_err().to_string();
        assert!(e.contains("weights-only"), "{e}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, [7u8; 40]).unwrap();
        assert!(Checkpoint::read(&junk).is_err());
        let missing = Checkpoint::read(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, CheckpointError::Missing { .. }));
    }

    #[test]
    fn a_header_no_run_writes_is_refused_naming_the_field() {
        let path = Path::new("c.safetensors");
        let read = |c: Checkpoint| Checkpoint::from_bytes(&c.to_bytes(), path).unwrap_err();
        for drops in [vec![2], vec![0], vec![1, 1]] {
            let e = read(Checkpoint {
                lr_drops: drops.clone(),
                ..sample()
            })
            .to_string();
            assert!(
                e.contains("drops of the rate") && e.contains("c.safetensors"),
                "{drops:?}: {e}"
            );
        }
        let mut c = sample();
        c.state.adam.config.lr = -1.0;
        let e = read(c).to_string();
        assert!(e.contains("Adam settings are"), "{e}");
    }
}
