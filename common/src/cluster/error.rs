//! What can go wrong in the cluster, on either side of the wire; every variant names the peer,
//! the file or the call, and keeps its cause.

/// What can go wrong in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A connection could not be made or served.
    #[error("transport to {peer}: {}", causes(source))]
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
    /// A system call on a file, socket or process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file, address or program.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The coordinator refused this worker.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// The coordinator refused this worker for now (its rank is still held by a session that
    /// is going away); it may try again.
    #[error("the coordinator cannot admit this worker yet: {0}")]
    RefusedForNow(String),
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
    /// A rank of a step every rank must take part in (NCCL) was lost.
    #[error("a rank was lost during {what}; the NCCL group must be formed again")]
    RankLost {
        /// What was in flight.
        what: String,
    },
    /// Fewer workers remain than the run needs, and none joined in time.
    #[error(
        "only {left} worker(s) left, the run needs at least {min} (--min-workers), and none joined within {secs} s; the last one lost was {last_lost}"
    )]
    TooFewWorkers {
        /// Workers still in the run.
        left: usize,
        /// `--min-workers`.
        min: usize,
        /// The join timeout.
        secs: u64,
        /// The last worker lost and why.
        last_lost: String,
    },
    /// Replicas that step Adam themselves no longer hold the same weights.
    #[error("the replicas diverged after {steps} steps: {detail}; stopping before it spreads")]
    Diverged {
        /// Optimizer steps taken.
        steps: u64,
        /// Which ranks disagree.
        detail: String,
    },
    /// The dataset a worker was told to load could not be read.
    #[error("loading the dataset: {0}")]
    Data(#[from] crate::data::DataError),
    /// The replica could not be built, loaded or stepped.
    #[error(transparent)]
    Train(#[from] Box<crate::train::TrainError>),
    /// A worker's optimizer refused a reduced gradient.
    #[error("applying the reduced gradient: {0}")]
    Aggregation(#[from] crate::aggregation::AggregationError),
    /// NCCL failed.
    #[cfg(feature = "nccl")]
    #[error(transparent)]
    Nccl(#[from] super::nccl::NcclError),
    /// The run cannot be set up as asked.
    #[error("{0}")]
    Setup(String),
    /// The coordinator said the run failed.
    #[error("the coordinator stopped the run because it failed: {0}")]
    RunFailed(String),
    /// The run was interrupted (SIGINT or SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

/// An error and every cause under it, joined with ": " (tonic's transport error says only
/// "transport error"; the reason, a refused certificate say, is further down).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

impl ClusterError {
    /// Maps a failed gRPC `call` to its error; the coordinator's refusal of the token becomes
    /// [`ClusterError::Refused`], with the coordinator's words.
    pub fn status(call: &'static str) -> impl Fn(tonic::Status) -> ClusterError {
        move |s| match s.code() {
            tonic::Code::Unauthenticated => ClusterError::Refused(s.message().to_string()),
            _ => ClusterError::Status {
                call,
                status: Box::new(s),
            },
        }
    }
}

impl From<crate::train::TrainError> for ClusterError {
    fn from(e: crate::train::TrainError) -> Self {
        ClusterError::Train(Box::new(e))
    }
}

impl From<crate::model::ModelError> for ClusterError {
    fn from(e: crate::model::ModelError) -> Self {
        ClusterError::Train(Box::new(e.into()))
    }
}

impl From<ClusterError> for crate::train::TrainError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Train(inner) => *inner,
            ClusterError::Interrupted => crate::train::TrainError::Interrupted,
            e @ ClusterError::RankLost { .. } => crate::train::TrainError::Regroup(e.to_string()),
            other => crate::train::TrainError::Engine(Box::new(other)),
        }
    }
}
