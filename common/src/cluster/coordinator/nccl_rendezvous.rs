//! NCCL's rendezvous through the coordinator: rank 0's unique id relayed to every rank over
//! gRPC (no files, no shared filesystem), then every rank's word that its communicator formed.

use std::time::Duration;

use super::links::Links;
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{NcclId, coordinator_message, worker_message};

/// Relays rank 0's NCCL unique id to every rank and waits until every communicator is up,
/// within `limit`: a rank that never forms its communicator stops the run with an error naming
/// it instead of leaving the others blocked in NCCL's init.
pub fn rendezvous(links: &mut Links, limit: Duration) -> Result<(), ClusterError> {
    let id = match links.receive_within(0, limit, "send the NCCL unique id")? {
        (_, worker_message::Body::NcclId(n)) if !n.id.is_empty() => n.id,
        _ => {
            return Err(links.protocol_error(0, "rank 0 did not start with the NCCL unique id"));
        }
    };
    for w in 0..links.len() {
        links.send(
            w,
            coordinator_message::Body::NcclId(NcclId { id: id.clone() }),
        )?;
    }
    for w in 0..links.len() {
        match links.receive_within(w, limit, "form its NCCL communicator")? {
            (_, worker_message::Body::NcclReady(r)) if r.rank == links.link(w).rank => {}
            _ => return Err(links.protocol_error(w, "expected NcclReady with its rank")),
        }
    }
    tracing::info!(
        world = links.len(),
        "NCCL communicator formed on every rank"
    );
    Ok(())
}
