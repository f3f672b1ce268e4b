//! NCCL's rendezvous through the coordinator: rank 0's unique id relayed to every rank over
//! gRPC (no files, no shared filesystem), then every rank's word that its communicator formed.

use std::time::{Duration, Instant};

use super::pool::WorkerPool;
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{NcclId, coordinator_message, worker_message};

/// Relays the lowest rank's NCCL unique id to every member and waits until every communicator
/// is up, within `limit`: a rank that never forms its communicator stops the run with an error
/// naming it instead of leaving the others blocked in NCCL's init.
pub fn rendezvous(pool: &mut WorkerPool, limit: Duration) -> Result<(), ClusterError> {
    let deadline = Instant::now() + limit;
    let none = |_: &super::pool::Member| Vec::new();
    let timeout = |what: String| ClusterError::Timeout {
        what,
        secs: limit.as_secs(),
    };
    let first = pool
        .members()
        .first()
        .map(|m| (m.session, m.peer.clone()))
        .ok_or_else(|| ClusterError::Setup("no worker to form an NCCL group with".into()))?;
    let id = match pool.next_message(deadline, &none)? {
        None => return Err(timeout(format!("{} to send the NCCL unique id", first.1))),
        Some((s, worker_message::Body::NcclId(n))) if s == first.0 && !n.id.is_empty() => n.id,
        Some((s, _)) => {
            return Err(ClusterError::Protocol {
                peer: member_peer(pool, s),
                what: "expected the NCCL unique id from the lowest rank".into(),
            });
        }
    };
    let members: Vec<(u64, u32)> = pool.members().iter().map(|m| (m.session, m.rank)).collect();
    for (w, &(_, rank)) in members.iter().enumerate() {
        let body = coordinator_message::Body::NcclId(NcclId { id: id.clone() });
        if let Err(why) = pool.send(w, body) {
            return Err(ClusterError::WorkerLost {
                rank,
                peer: pool.members()[w].peer.clone(),
                why,
            });
        }
    }
    let mut waiting: Vec<(u64, u32)> = members;
    while !waiting.is_empty() {
        match pool.next_message(deadline, &none)? {
            None => {
                let ranks: Vec<String> = waiting.iter().map(|(_, r)| r.to_string()).collect();
                let what = match ranks.len() {
                    1 => format!("rank {} to form its NCCL communicator", ranks[0]),
                    _ => format!(
                        "ranks {} to form their NCCL communicators",
                        ranks.join(", ")
                    ),
                };
                return Err(timeout(what));
            }
            Some((s, worker_message::Body::NcclReady(r)))
                if waiting.iter().any(|&(ws, wr)| ws == s && wr == r.rank) =>
            {
                waiting.retain(|&(ws, _)| ws != s);
            }
            Some((s, _)) => {
                return Err(ClusterError::Protocol {
                    peer: member_peer(pool, s),
                    what: "expected NcclReady with its rank".into(),
                });
            }
        }
    }
    tracing::info!(
        world = pool.members().len(),
        "NCCL communicator formed on every rank"
    );
    Ok(())
}

fn member_peer(pool: &WorkerPool, session: u64) -> String {
    pool.member(session).map_or_else(
        || format!("session {session}"),
        |w| pool.members()[w].peer.clone(),
    )
}
