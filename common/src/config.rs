//! The run configuration: one typed struct, read from flags or environment, printed at start and
//! stored in the results file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::DatasetKind;
use crate::train::TrainError;
use crate::train::checkpoint::CheckpointError;
use crate::train::output_files::{AVERAGE_WEIGHTS_EXTENSION, BEST_WEIGHTS_EXTENSION, OutputFile};
use crate::train::recipe::Selection;

/// The paper's Adam learning rate, the default of every run.
pub const PAPER_LR: f64 = 1e-3;

/// Every setting of a training run.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset to train on.
    #[arg(long, value_enum, env = "SIAMESE_DATASET", default_value = "mnist")]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (default: $SIAMESE_DATA_DIR/<dataset>, else ./data/<dataset>;
    /// downloaded there when absent).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training epochs, 1 to 100000 (default: the paper's count for the dataset: 50, 100 or
    /// 1500).
    #[arg(long, env = "SIAMESE_EPOCHS", value_parser = within(1usize, 100_000))]
    pub epochs: Option<usize>,
    /// Pairs per global batch, split across all workers (1 to 65536).
    #[arg(long, env = "SIAMESE_BATCH_SIZE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,
    /// Adam learning rate (the paper's 1e-3): finite, above 0, at most 10.
    #[arg(long, env = "SIAMESE_LR", default_value_t = PAPER_LR, value_parser = learning_rate, allow_negative_numbers = true)]
    pub lr: f64,
    /// Seed for weights and training pairs; the split and the test pairs are fixed.
    #[arg(long, env = "SIAMESE_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Compute threads, 1 to 1024: of this process with --workers 0, else of each local worker
    /// (default: the cores split evenly among the workers).
    #[arg(long, env = "SIAMESE_THREADS", value_parser = within(1usize, 1024))]
    pub threads: Option<usize>,
    /// Embedding width of the subnet (1 to 4096).
    #[arg(long, env = "SIAMESE_EMBEDDING", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub embedding: u32,
    /// Stop after this many optimizer steps in all, at least 1 (the last epoch may be
    /// partial).
    #[arg(long, env = "SIAMESE_MAX_STEPS", value_parser = at_least(1u64))]
    pub max_steps: Option<u64>,
    /// Use only the first N images of the training split, at least 2 (for quick runs).
    #[arg(long, env = "SIAMESE_TRAIN_SUBSET", value_parser = at_least(2usize))]
    pub train_subset: Option<usize>,
    /// Use only the first N validation pairs, at least 1.
    #[arg(long, env = "SIAMESE_VAL_PAIRS", value_parser = at_least(1usize))]
    pub val_pairs: Option<usize>,
    /// Score only the first N of the 10,000 test pairs, at least 2 (a prefix keeps them
    /// balanced; one of each kind is needed for the ROC AUC).
    #[arg(long, env = "SIAMESE_TEST_PAIRS", value_parser = at_least(2usize))]
    pub test_pairs: Option<usize>,
    /// Results file (JSON, keys in docs/spec.md); default results/<dataset>-<unix time>.json.
    #[arg(long, env = "SIAMESE_OUT")]
    pub out: Option<PathBuf>,
    /// The run's checkpoint: weights, Adam's state, position and history in one safetensors
    /// file, written atomically at every epoch's end, every --checkpoint-every steps and on
    /// SIGTERM/SIGINT; after the run it holds the final weights. Default: beside the results
    /// file.
    #[arg(long, env = "SIAMESE_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
    /// Also write the checkpoint every N optimizer steps (0: only at epoch ends and on signals).
    #[arg(long, env = "SIAMESE_CHECKPOINT_EVERY", default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Continue from a checkpoint: PATH, or `auto` for the run's own --checkpoint file when it
    /// exists and a fresh start when it does not (what a restarted pod or a requeued job runs).
    /// A checkpoint of another run (dataset, data, seed, batch, model) is refused.
    #[arg(long, env = "SIAMESE_RESUME", value_parser = Resume::parse)]
    pub resume: Option<Resume>,
    /// Pairs per micro-batch: gradients are summed within each micro-batch and then over them
    /// in one fixed tree, so that any number of workers gives the same bytes (part of the run's
    /// identity: another value is another run). A replica computes at most 128 pairs in one
    /// backward call, or one whole micro-batch when it holds more: above 128, memory grows
    /// with it.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub micro_batch: u32,
    /// Augmentation, weight decay, schedule, selection and early stopping (the paper's by
    /// default).
    #[command(flatten)]
    #[serde(flatten)]
    pub recipe: crate::train::Recipe,
}

/// A parser for a number in `min..=max` that names the range when a value is outside it.
pub fn within<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |s| match s.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        Ok(v) => Err(format!("{v} is outside {min} to {max}")),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}

/// A parser for a number of at least `min`.
pub fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |s| match s.parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        Ok(v) => Err(format!("{v} is below the least allowed, {min}")),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}

/// A learning rate: finite, above 0, at most 10.
pub fn learning_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 10.0 => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not a learning rate (finite, above 0, at most 10)"
        )),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// Where `--resume` continues from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resume {
    /// The run's own checkpoint file if it exists, else a fresh start.
    Auto,
    /// This checkpoint file, which must exist.
    Path(PathBuf),
}

impl Resume {
    /// Parses `auto` or a path.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("give a checkpoint path or `auto`".into()),
            "auto" => Ok(Resume::Auto),
            path => Ok(Resume::Path(PathBuf::from(path))),
        }
    }
}

/// A flag struct with every field at its default (the same defaults `--help` shows, and the
/// environment variables it names).
/// Fails only when one of those variables holds a bad value.
pub fn clap_defaults<T: clap::Args + clap::FromArgMatches>() -> Result<T, clap::Error> {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    let matches = cmd.try_get_matches_from(["defaults"])?;
    T::from_arg_matches(&matches)
}

impl TrainConfig {
    /// The defaults for `dataset`, as with no other flags.
    pub fn defaults(dataset: DatasetKind) -> Result<Self, clap::Error> {
        Ok(TrainConfig {
            dataset,
            ..clap_defaults()?
        })
    }

    /// Fills every default that depends on the dataset, the clock or the number of local
    /// processes computing (`processes`: 1 in this process, else the local workers), so the
    /// printed and stored configuration is the one that runs.
    pub fn resolved(mut self, processes: usize) -> Self {
        self.epochs = Some(self.epochs());
        self.out = Some(self.out_path());
        self.threads = Some(self.threads_per_process(processes));
        self
    }

    /// Epoch count with the paper's default filled in.
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or_else(|| self.dataset.paper_epochs())
    }

    /// Refuses flags that mean nothing together (the recipe's checks, and a fixed drop of the
    /// rate at or past the last epoch, which would never take effect), naming them.
    pub fn check(&self) -> Result<(), String> {
        self.recipe.check()?;
        let epochs = self.epochs();
        match self.recipe.lr_drop_after.last() {
            Some(&last) if last as usize >= epochs => Err(format!(
                "--lr-drop-after {} drops the rate after epoch {last}, but the run trains {epochs} epochs (--epochs): every drop must come before the last epoch",
                self.recipe.drop_schedule()
            )),
            _ => Ok(()),
        }
    }

    /// Results path with the default filled in.
    pub fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("results/{}-{secs}.json", self.dataset.name()))
        })
    }

    /// Checkpoint path: the flag, else the results path with a `.safetensors` extension.
    pub fn checkpoint_path(&self, out: &std::path::Path) -> PathBuf {
        self.checkpoint
            .clone()
            .unwrap_or_else(|| out.with_extension("safetensors"))
    }

    /// The checkpoint `--resume` continues from, `None` for a fresh start; refused when
    /// `--resume auto` has no fixed path to look at, or a `--resume PATH` does not exist. Call
    /// it on the flags as given: [`Self::resolved`] fills in the default results name, which
    /// changes with the clock, so a restarted run would look for another checkpoint.
    pub fn resume_from(&self) -> Result<Option<PathBuf>, TrainError> {
        match &self.resume {
            None => Ok(None),
            Some(Resume::Path(path)) if !path.exists() => {
                Err(CheckpointError::Missing { path: path.clone() }.into())
            }
            Some(Resume::Path(path)) => Ok(Some(path.clone())),
            Some(Resume::Auto) if self.checkpoint.is_none() && self.out.is_none() => {
                Err(TrainError::Config(
                    "--resume auto needs --checkpoint FILE (or --out FILE): the default results name changes with the clock, so a restarted run would not find its checkpoint".into(),
                ))
            }
            Some(Resume::Auto) => {
                let path = self.checkpoint_path(&self.out_path());
                Ok(path.exists().then_some(path))
            }
        }
    }

    /// The files the run writes, for checking before it starts: the results, the checkpoint
    /// and, where `--select best-val` or `--ema` tests other weights than the last, their
    /// weights-only file beside the checkpoint.
    pub fn output_files(&self) -> Vec<OutputFile> {
        let out = self.out_path();
        let checkpoint = self.checkpoint_path(&out);
        let tested = match (self.recipe.select, self.recipe.ema != 0.0) {
            (Selection::BestVal, _) => Some(("--select best-val", BEST_WEIGHTS_EXTENSION)),
            (Selection::Last, true) => Some(("--ema", AVERAGE_WEIGHTS_EXTENSION)),
            (Selection::Last, false) => None,
        };
        let checkpoint_flag = match self.checkpoint {
            Some(_) => "--checkpoint",
            None => "the checkpoint (beside --out)",
        };
        let mut files = vec![
            OutputFile::new("--out (the results)", out),
            OutputFile::new(checkpoint_flag, checkpoint.clone()),
        ];
        if let Some((flag, extension)) = tested {
            files.push(OutputFile::new(
                format!("the weights {flag} tests (beside the checkpoint)"),
                checkpoint.with_extension(extension),
            ));
        }
        files
    }

    /// Compute threads of each of `processes` local processes: the flag, else the cores split
    /// evenly among them.
    pub fn threads_per_process(&self, processes: usize) -> usize {
        self.threads
            .unwrap_or_else(|| crate::threads::default_threads(processes))
    }
}
