//! What the coordinator's service hands to its engine: admitted sessions and every message
//! from them, on one channel, so the engine waits on one thing whatever happens.

use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;

use crate::cluster::protocol::proto::{CoordinatorMessage, Join, WorkerMessage};

/// An admitted worker's session.
pub struct WorkerLink {
    /// This session's number, unique in the coordinator's life: a worker that reconnects is a
    /// new session, and a late message of an old one is recognised and dropped.
    pub session: u64,
    /// Its rank.
    pub rank: u32,
    /// `host:pid at address`, for messages.
    pub peer: String,
    /// What it said at join.
    pub join: Join,
    /// Whether it mapped the shared file.
    pub shm: bool,
    /// Messages to it.
    pub to_worker: mpsc::Sender<Result<CoordinatorMessage, Status>>,
}

/// Something the engine must hear about.
pub enum Event {
    /// A worker was admitted.
    Joined(WorkerLink),
    /// A session sent a message; stamped when it arrived.
    Message {
        /// The session.
        session: u64,
        /// Arrival time.
        at: Instant,
        /// The message.
        message: WorkerMessage,
    },
    /// A session's stream ended or failed.
    Ended {
        /// The session.
        session: u64,
        /// Why, in words.
        why: String,
    },
    /// A worker process this coordinator started exited: "local worker process PID (STATUS)".
    ProcessExited(String),
}
