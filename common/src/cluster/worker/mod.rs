//! The worker's side of the cluster: the session with the coordinator, the task loop that
//! computes shards on the replica, and, for replicas that step Adam themselves, the reducer
//! their gradients meet through.

mod device;
mod nccl_join;
mod reducer;
mod session;
mod task_loop;
#[cfg(feature = "nccl")]
mod watchdog;

pub use device::parse_device;
pub use session::{WorkerOptions, run_worker, run_worker_blocking};
