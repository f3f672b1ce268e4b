//! The worker's side of the cluster: the session with the coordinator (and reconnecting when it
//! goes away), the task loop that computes blocks on the replica (long ones on a pool of their
//! own), and NCCL's reducer for replicas that all-reduce among themselves.

mod coordinator_url;
mod device;
mod long_tasks;
mod nccl_join;
mod nccl_reducer;
mod session;
mod task_loop;
#[cfg(feature = "nccl")]
mod watchdog;
mod welcome;

pub use coordinator_url::coordinator_url;
pub use device::parse_device;
pub use session::{WorkerOptions, run_worker, run_worker_blocking};
pub use task_loop::{SessionEnd, TaskRunner};
pub use welcome::{WelcomedRun, check_welcome};
