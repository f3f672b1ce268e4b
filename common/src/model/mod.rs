//! SN-LeNet-5: the weight-shared LeNet-5 subnet, the Euclidean comparison, the sigmoid
//! similarity unit and the paper's contrastive loss, in Candle; and the plain LeNet-5
//! classifier the paper compares it with.

#[cfg(target_arch = "x86_64")]
mod conv_avx512;
pub mod conv_block;
pub mod conv_geom;
pub mod conv_kernels;
mod cpu_view;
mod fused_mul_add;
pub mod grouping;
pub mod kernel_path;
pub mod lenet;
pub mod linear;
pub mod loss;
pub mod network;
pub mod params;
pub(crate) mod simd;
pub mod similarity;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// Version of the model's parameter layout and arithmetic: replicas, checkpoints and workers must
/// agree on it. Version 2 sums gradients per micro-batch and through the fixed tree.
pub const MODEL_VERSION: &str = "sn-lenet5/2";

pub use conv_block::{conv_relu_pool, conv_relu_pool_reference};
pub use conv_geom::ConvGeom;
pub use grouping::Grouping;
pub use kernel_path::{KERNELS_ENV, KernelPath};
pub use loss::{contrastive_loss, cross_entropy_sum, pair_loss};
pub use network::{ClassStep, Network, PairStep};
pub use params::{Head, MAX_EMBEDDING, ModelSpec, ParamInfo};

/// What can go wrong building, running or saving the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape bug or device error).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The batch cannot be cut into the asked micro-batches.
    #[error("micro-batches: {0}")]
    MicroBatches(#[from] crate::aggregation::tree::TreeError),
    /// A flat weight or gradient vector of the wrong size.
    #[error("{what} has {got} values, the model has {want} parameters")]
    WrongLength {
        /// Which vector (e.g. "gradient from worker 2").
        what: String,
        /// Its length.
        got: usize,
        /// The model's parameter count.
        want: usize,
    },
    /// A checkpoint that cannot be read or does not fit the model.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A model layout this build cannot run (from a peer or a file).
    #[error("model layout {spec}: {why}")]
    BadSpec {
        /// The layout, as given.
        spec: String,
        /// What is out of bounds.
        why: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
