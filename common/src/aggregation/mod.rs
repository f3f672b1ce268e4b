//! Where a step's gradients meet: the one summation tree over micro-batches, the mean over the
//! global batch, the check that every value is finite, and Adam applied to the mean. Each exists
//! once here, and every aggregation mode (in this process, through the coordinator, through
//! NCCL) calls them.

mod error;
mod mean;
mod mode;
mod optimizer_state;
pub mod tree;

pub use error::AggregationError;
pub use mean::{check_finite, mean_of_sum};
pub use mode::Aggregation;
pub use optimizer_state::{OptimizerState, weights_digest};
