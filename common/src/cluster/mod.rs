//! The cluster: a coordinator that shards every global batch across worker processes over gRPC,
//! and the workers that compute the shards.
//!
//! Each side of the wire has its own module, so that a reader knows whose process a line runs
//! in: `coordinator` (the gRPC service, admission, the engine that drives the workers, local
//! worker processes) and `worker` (the session with the coordinator and the task loop). What
//! both speak sits between them in `protocol` (messages, wire encoding, the token, the shared
//! memory file); `nccl` is the GPU collective the workers may reduce through. Neither side
//! imports the other.

pub mod coordinator;
mod error;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod protocol;
pub mod worker;

pub use coordinator::{ClusterArgs, train_on_cluster, with_cluster};
pub use error::ClusterError;
pub use worker::{WorkerOptions, coordinator_url, run_worker, run_worker_blocking};
