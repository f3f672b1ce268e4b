//! The admitted workers as the coordinator's engine sees them: one session each, addressed by
//! position (ordered by rank), with task ids and receives that never wait past their limit.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::Status;

use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, Join, Stop, Task, WorkerMessage, coordinator_message, task, worker_message,
};
use crate::stop::StopFlag;

/// A message from a worker, stamped when it arrived, or the end of its stream.
#[derive(Debug)]
pub enum Inbound {
    /// A message and its arrival time.
    Message(Instant, WorkerMessage),
    /// The stream ended or failed.
    Lost(String),
}

/// An admitted worker's session, as the service hands it over.
pub struct WorkerLink {
    /// Its rank.
    pub rank: u32,
    /// `host:pid` and address, for messages.
    pub peer: String,
    /// What it said at join.
    pub join: Join,
    /// Whether its weights and gradients go through the shared file.
    pub shm: bool,
    /// Messages to it.
    pub to_worker: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    /// Messages from it.
    pub from_worker: mpsc::Receiver<Inbound>,
}

/// The admitted workers' sessions, ordered by rank.
pub struct Links {
    handle: Handle,
    workers: Vec<WorkerLink>,
    next_id: u64,
    step_timeout: Duration,
}

/// How often waits look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

impl Links {
    /// Waits (up to `join_timeout`) until `world` workers were admitted. A message on `dead`
    /// (a local worker process exited) or a raised `stop` ends the wait at once.
    pub fn admit(
        handle: Handle,
        (links, dead): (&mut mpsc::Receiver<WorkerLink>, &mut mpsc::Receiver<String>),
        world: usize,
        (join_timeout, step_timeout): (Duration, Duration),
        stop: &StopFlag,
    ) -> Result<Self, ClusterError> {
        let mut workers = Vec::with_capacity(world);
        let deadline = Instant::now() + join_timeout;
        while workers.len() < world {
            if stop.requested() {
                return Err(ClusterError::Interrupted);
            }
            // Timers are made inside the runtime: this thread is not one of its own.
            let next = handle.block_on(async {
                tokio::time::timeout_at(deadline.into(), async {
                    tokio::select! {
                        link = links.recv() => Some(Ok(link)),
                        Some(why) = dead.recv() => Some(Err(why)),
                        () = tokio::time::sleep(STOP_POLL) => None,
                    }
                })
                .await
            });
            match next {
                Ok(None) => {}
                Ok(Some(Err(why))) => {
                    return Err(ClusterError::Setup(format!(
                        "{why} before all workers joined (its log above says why)"
                    )));
                }
                Ok(Some(Ok(Some(link)))) => workers.push(link),
                Ok(Some(Ok(None))) => {
                    return Err(ClusterError::Setup(
                        "the server stopped while workers were joining".into(),
                    ));
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        what: format!("{world} workers to join ({} joined)", workers.len()),
                        secs: join_timeout.as_secs(),
                    });
                }
            }
        }
        workers.sort_by_key(|w| w.rank);
        Ok(Links {
            handle,
            workers,
            next_id: 0,
            step_timeout,
        })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The session of the worker at `w`.
    pub fn link(&self, w: usize) -> &WorkerLink {
        &self.workers[w]
    }

    /// All sessions, ordered by rank.
    pub fn iter(&self) -> impl Iterator<Item = &WorkerLink> {
        self.workers.iter()
    }

    /// The error for a peer that broke the protocol.
    pub fn protocol_error(&self, w: usize, what: impl Into<String>) -> ClusterError {
        ClusterError::Protocol {
            peer: self.workers[w].peer.clone(),
            what: what.into(),
        }
    }

    /// Queues `body` for worker `w`.
    pub fn send(&self, w: usize, body: coordinator_message::Body) -> Result<(), ClusterError> {
        let link = &self.workers[w];
        let msg: Result<CoordinatorMessage, Status> = Ok(CoordinatorMessage { body: Some(body) });
        // The channel's own path for synchronous callers: cheaper than entering the runtime.
        link.to_worker
            .blocking_send(msg)
            .map_err(|_| ClusterError::WorkerLost {
                rank: link.rank,
                peer: link.peer.clone(),
                why: "its session is closed".into(),
            })
    }

    /// Sends worker `w` a task to compute at weights `version`; returns its id.
    pub fn task(&mut self, w: usize, version: u64, kind: task::Kind) -> Result<u64, ClusterError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(
            w,
            coordinator_message::Body::Task(Task {
                id,
                weights_version: version,
                kind: Some(kind),
            }),
        )?;
        Ok(id)
    }

    /// The next message of worker `w` (the answer to task `id`), with its arrival time, within
    /// the step timeout.
    pub fn receive(
        &mut self,
        w: usize,
        id: u64,
    ) -> Result<(Instant, worker_message::Body), ClusterError> {
        self.receive_within(w, self.step_timeout, &format!("answer task {id}"))
    }

    /// The next message of worker `w` within `limit`; `what` says what it was to do.
    pub fn receive_within(
        &mut self,
        w: usize,
        limit: Duration,
        what: &str,
    ) -> Result<(Instant, worker_message::Body), ClusterError> {
        let link = &mut self.workers[w];
        let lost = |why: String| ClusterError::WorkerLost {
            rank: link.rank,
            peer: link.peer.clone(),
            why,
        };
        let next = self
            .handle
            .block_on(async { tokio::time::timeout(limit, link.from_worker.recv()).await });
        match next {
            Err(_) => Err(ClusterError::Timeout {
                what: format!("worker {} ({}) to {what}", link.rank, link.peer),
                secs: limit.as_secs(),
            }),
            Ok(None) => Err(lost("its session ended".into())),
            Ok(Some(Inbound::Lost(why))) => Err(lost(why)),
            Ok(Some(Inbound::Message(at, msg))) => match msg.body {
                Some(worker_message::Body::Error(e)) => Err(ClusterError::WorkerFailed {
                    rank: link.rank,
                    peer: link.peer.clone(),
                    message: e.message,
                }),
                Some(body) => Ok((at, body)),
                None => Err(ClusterError::Protocol {
                    peer: link.peer.clone(),
                    what: "an empty message".into(),
                }),
            },
        }
    }

    /// Tells every worker to stop.
    pub fn stop_all(&mut self, reason: &str) {
        for w in 0..self.len() {
            let _ = self.send(
                w,
                coordinator_message::Body::Stop(Stop {
                    reason: reason.into(),
                }),
            );
        }
    }
}
