//! What can stop a benchmark, naming the file, flag or run that failed.

use std::path::{Path, PathBuf};

use siamese_common::data::DataError;
use siamese_common::train::TrainError;

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The flags do not describe a runnable benchmark.
    #[error("invalid benchmark settings: {0}")]
    Config(String),
    /// A default read from the environment holds a bad value.
    #[error("an environment variable: {0}")]
    Environment(#[from] clap::Error),
    /// A dataset could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Weights could not be read or a model step failed.
    #[error(transparent)]
    Model(#[from] siamese_common::model::ModelError),
    /// A training run failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The compute thread pool could not start.
    #[error("starting the compute thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A report could not be written where the flags say (checked before the work).
    #[error(transparent)]
    Output(#[from] siamese_common::train::output_files::OutputFileError),
    /// A report could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A report could not be encoded as JSON.
    #[error("encoding {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A figure could not be drawn.
    #[error("drawing {path}: {message}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
}

/// Maps an I/O error on `path` to the error that names it.
pub fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}
