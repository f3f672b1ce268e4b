//! Admission: what a joining worker must match (builds, dataset, the very same data, proved
//! against a fresh challenge), the rank it gets, its Welcome, and from then on every message of
//! its session handed to the engine in arrival order.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::events::{Event, WorkerLink};
use super::rank_table::{ClaimRefused, RankTable};
use crate::aggregation::Aggregation;
use crate::cluster::protocol::proto::{
    Challenge, CoordinatorMessage, Join, Refusal, RunInfo, Welcome, WorkerMessage,
    coordinator_message, worker_message,
};
use crate::cluster::protocol::{MODEL_VERSION, PROTOCOL_VERSION};
use crate::data::Dataset;

/// How long a new session has to send its Join.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long a worker has to answer the data challenge (hashing its data takes well under one).
const PROOF_DEADLINE: Duration = Duration::from_secs(60);
/// Longest host name a Join may carry (DNS's limit): it goes into logs and the results file.
const MAX_HOST_LEN: usize = 253;
/// Longest device name a Join may carry.
const MAX_DEVICE_LEN: usize = 64;

/// What a joining worker must match, and what it is told when admitted.
pub struct Admission {
    /// The run's data, against which every worker's proof is checked.
    pub data: Arc<Dataset>,
    /// Number of workers the run trains with.
    pub world_size: u32,
    /// Model layout, JSON.
    pub spec_json: String,
    /// Run configuration, JSON.
    pub config_json: String,
    /// The shared file for workers on this host, and the nonce in its header.
    pub shm: Option<(String, u64)>,
    /// Where gradients meet.
    pub aggregation: Aggregation,
    /// Seconds workers have to form an NCCL communicator.
    pub nccl_timeout_s: u32,
}

impl Admission {
    /// Why `join` cannot take part in this run, if it cannot (before any data is compared).
    fn check(&self, join: &Join) -> Result<(), String> {
        check_join(join, self.data.kind.name())
    }
}

/// Why `join` cannot take part in a run on `dataset`, if it cannot: what the coordinator checks
/// before any data is compared (also the fuzz target's entry).
pub fn check_join(join: &Join, dataset: &str) -> Result<(), String> {
    if join.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "the worker speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}: run matching builds",
            join.protocol_version
        ));
    }
    if join.model_version != MODEL_VERSION {
        return Err(format!(
            "the worker's model is {:?}, this coordinator's is {MODEL_VERSION:?}: run matching builds",
            clip(&join.model_version)
        ));
    }
    if join.dataset != dataset {
        return Err(format!(
            "the worker loaded {:?}, this run trains on {dataset:?}",
            clip(&join.dataset)
        ));
    }
    if join.host.len() > MAX_HOST_LEN || join.device.len() > MAX_DEVICE_LEN {
        return Err(format!(
            "its Join names a host of {} bytes or a device of {} (at most {MAX_HOST_LEN} and {MAX_DEVICE_LEN})",
            join.host.len(),
            join.device.len()
        ));
    }
    Ok(())
}

/// At most 64 characters of a peer's string, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn message(body: coordinator_message::Body) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage {
        body: Some(body),
        tasks: Vec::new(),
    })
}

/// A fresh 32-byte challenge from the OS.
fn nonce() -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The admission of every session, shared by the service's handlers.
pub struct Gate {
    admission: Admission,
    ranks: RankTable,
    events: mpsc::Sender<Event>,
    next_session: AtomicU64,
}

impl Gate {
    /// A gate into the free ranks of `ranks`, reporting admitted sessions on `events`.
    pub fn new(admission: Admission, ranks: RankTable, events: mpsc::Sender<Event>) -> Self {
        Gate {
            admission,
            ranks,
            events,
            next_session: AtomicU64::new(1),
        }
    }

    /// What `Run` answers.
    pub fn run_info(&self) -> RunInfo {
        RunInfo {
            protocol_version: PROTOCOL_VERSION,
            model_version: MODEL_VERSION.into(),
            dataset: self.admission.data.kind.name().into(),
            world_size: self.admission.world_size,
            shm_path: self
                .admission
                .shm
                .as_ref()
                .map(|(path, _)| path.clone())
                .unwrap_or_default(),
        }
    }

    /// Admits (or refuses) the session that sent `join`, talking to it through `tx`; then hands
    /// every message it sends to the engine until its stream ends.
    pub async fn admit(
        self: Arc<Self>,
        join: Join,
        mut inbound: Streaming<WorkerMessage>,
        tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
        addr: String,
    ) {
        let peer = format!("{}:{} at {addr}", clip(&join.host), join.pid);
        let refuse = |reason: String, retry: bool| {
            tracing::warn!(%peer, %reason, "refused a worker");
            let tx = tx.clone();
            async move {
                let refusal = Refusal { reason, retry };
                let _ = tx
                    .send(message(coordinator_message::Body::Refusal(refusal)))
                    .await;
            }
        };
        if let Err(reason) = self.admission.check(&join) {
            return refuse(reason, false).await;
        }
        match self.prove(&mut inbound, &tx).await {
            Ok(()) => {}
            Err(reason) => return refuse(reason, false).await,
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let rank = match self.ranks.claim(join.rank, session) {
            Ok(rank) => rank,
            Err(ClaimRefused::OutOfRange(reason)) => return refuse(reason, false).await,
            Err(ClaimRefused::Taken(reason)) => return refuse(reason, true).await,
        };
        let a = &self.admission;
        let shm = match (&a.shm, join.shm_nonce) {
            (Some((_, nonce)), Some(echoed)) => *nonce == echoed,
            _ => false,
        };
        let welcome = Welcome {
            rank,
            world_size: a.world_size,
            model_spec_json: a.spec_json.clone(),
            config_json: a.config_json.clone(),
            shm,
            aggregation: a.aggregation.name().into(),
            nccl_timeout_s: a.nccl_timeout_s,
        };
        if tx
            .send(message(coordinator_message::Body::Welcome(welcome)))
            .await
            .is_err()
        {
            self.ranks.release(rank, session);
            return;
        }
        tracing::info!(rank, %peer, device = %clip(&join.device), threads = join.threads, shm, "worker joined");
        let link = WorkerLink {
            session,
            rank,
            peer,
            join,
            shm,
            to_worker: tx,
        };
        if self.events.send(Event::Joined(link)).await.is_err() {
            self.ranks.release(rank, session);
            return;
        }
        // Every message goes to the engine in arrival order; the end of the stream frees the
        // rank for a replacement.
        let mut last = Instant::now();
        let why = loop {
            match inbound.message().await {
                Ok(Some(message)) => {
                    last = Instant::now();
                    let event = Event::Message {
                        session,
                        at: last,
                        message,
                    };
                    if self.events.send(event).await.is_err() {
                        break "the coordinator stopped listening".to_string();
                    }
                }
                Ok(None) => break ended("its stream ended", last),
                Err(s) => break ended(&format!("its stream failed: {}", s.message()), last),
            }
        };
        self.ranks.release(rank, session);
        let _ = self.events.send(Event::Ended { session, why }).await;
    }

    /// Challenges the worker with a fresh nonce and checks its answer against this run's data;
    /// the refusal says nothing of the expected answer.
    async fn prove(
        &self,
        inbound: &mut Streaming<WorkerMessage>,
        tx: &mpsc::Sender<Result<CoordinatorMessage, Status>>,
    ) -> Result<(), String> {
        let nonce =
            nonce().map_err(|e| format!("the coordinator could not make a challenge: {e}"))?;
        let challenge = Challenge {
            nonce: nonce.clone().into(),
        };
        tx.send(message(coordinator_message::Body::Challenge(challenge)))
            .await
            .map_err(|_| "the session closed".to_string())?;
        let answer = match tokio::time::timeout(PROOF_DEADLINE, inbound.message()).await {
            Err(_) => {
                return Err(format!(
                    "no answer to the data challenge within {} s",
                    PROOF_DEADLINE.as_secs()
                ));
            }
            Ok(Ok(Some(WorkerMessage {
                body: Some(worker_message::Body::Proof(p)),
            }))) => p.proof,
            Ok(_) => return Err("it did not answer the data challenge".into()),
        };
        let data = self.admission.data.clone();
        let expected = tokio::task::spawn_blocking(move || data.proof(&nonce))
            .await
            .map_err(|e| format!("checking the answer failed: {e}"))?;
        if answer.as_bytes() != expected.as_bytes() {
            return Err(format!(
                "its {} data differs from the coordinator's: it holds different files (check its --data-dir)",
                self.admission.data.kind.name()
            ));
        }
        Ok(())
    }
}

/// Why a session ended: `how`, and how long it had been silent when that is long enough to
/// matter. A worker that exits closes its stream at once; a connection that the keepalive
/// PINGs found dead ends seconds after its last message, and the user needs the hint.
fn ended(how: &str, last: Instant) -> String {
    let quiet = last.elapsed();
    if quiet < Duration::from_secs(1) {
        return how.to_string();
    }
    format!(
        "{how} {:.1} s after its last message (if its process did not exit, its connection \
         missed two keepalive PINGs: a frozen worker, a lost host or network, or a task longer \
         than two --keepalive periods)",
        quiet.as_secs_f64()
    )
}
