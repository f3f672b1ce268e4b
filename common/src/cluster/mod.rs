//! The cluster: protocol, authentication, the coordinator's service, the engine that drives
//! workers through it, the worker's client loop, and local worker processes.

pub mod aggregation;
pub mod auth;
mod collect;
mod embed;
pub mod engine;
pub mod proto;
pub mod replica_step;
mod replicated;
pub mod run;
pub mod service;
pub mod shm;
pub mod spawn;
mod step_clock;
pub mod tasks;
pub mod wire;
pub mod worker;

pub use aggregation::{Aggregation, EngineSettings};
pub use engine::ClusterEngine;
pub use run::{ClusterArgs, train_on_cluster, with_cluster};
pub use service::{Admission, CoordinatorService, WorkerLink, serve};
pub use spawn::LocalWorkers;
pub use worker::{WorkerOptions, run_worker, run_worker_blocking};

/// Version of `proto/cluster.proto`; a worker of another version is refused at join.
pub const PROTOCOL_VERSION: u32 = 2;
/// Version of the model's parameter layout and maths; replicas must agree on it.
pub const MODEL_VERSION: &str = "sn-lenet5/1";

/// What can go wrong in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A connection could not be made or served.
    #[error("transport to {peer}: {source}")]
    Transport {
        /// The address.
        peer: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// A gRPC call failed.
    #[error("{call} failed: {status}")]
    Status {
        /// Which call.
        call: &'static str,
        /// The status the peer returned.
        status: Box<tonic::Status>,
    },
    /// The coordinator refused this worker.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// A peer broke the protocol.
    #[error("protocol error from {peer}: {what}")]
    Protocol {
        /// Who.
        peer: String,
        /// What it did.
        what: String,
    },
    /// A worker went away mid-run.
    #[error("worker {rank} ({peer}) was lost: {why}")]
    WorkerLost {
        /// Its rank.
        rank: u32,
        /// host:pid.
        peer: String,
        /// What happened.
        why: String,
    },
    /// Something took longer than its limit.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        secs: u64,
    },
    /// A worker sent a gradient that cannot be applied; the step was not applied.
    #[error(
        "worker {rank} ({peer}) sent a bad gradient at task {task}: {why}; the step was not applied"
    )]
    BadGradient {
        /// Its rank.
        rank: u32,
        /// host:pid.
        peer: String,
        /// The task.
        task: u64,
        /// What is wrong with it.
        why: String,
    },
    /// A worker reported a failure.
    #[error("worker {rank} ({peer}) failed: {message}")]
    WorkerFailed {
        /// Its rank.
        rank: u32,
        /// host:pid.
        peer: String,
        /// Its message.
        message: String,
    },
    /// Replicas that step Adam themselves no longer hold the same weights.
    #[error("the replicas diverged after {steps} steps: {detail}; stopping before it spreads")]
    Diverged {
        /// Optimizer steps taken.
        steps: u64,
        /// Which ranks disagree.
        detail: String,
    },
    /// Setting up the run failed.
    #[error("{0}")]
    Setup(String),
}

impl From<ClusterError> for crate::train::TrainError {
    fn from(e: ClusterError) -> Self {
        crate::train::TrainError::Engine(e.to_string())
    }
}
