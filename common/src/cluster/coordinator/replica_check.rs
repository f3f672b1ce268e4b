//! Replicas that step Adam themselves (allreduce, nccl) could drift apart (a bug, a bad GPU):
//! the coordinator compares the md5 of their weights and fetches the weights for checkpoints.

use super::links::Links;
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{DigestTask, WeightsTask, task, worker_message};
use crate::cluster::protocol::wire::decode_f32;

/// Asks every replica (at weights `version`) for the md5 of its weights and its step count;
/// any difference, or a count other than `steps`, stops the run with the ranks that disagree.
pub fn check_digests(links: &mut Links, version: u64, steps: u64) -> Result<(), ClusterError> {
    let mut ids = Vec::with_capacity(links.len());
    for w in 0..links.len() {
        ids.push(links.task(w, version, task::Kind::Digest(DigestTask {}))?);
    }
    let mut digests = Vec::with_capacity(ids.len());
    for (w, id) in ids.into_iter().enumerate() {
        match links.receive(w, id)? {
            (_, worker_message::Body::Digest(d)) if d.id == id => digests.push(d),
            _ => {
                let what = format!("expected the weights digest of task {id}");
                return Err(links.protocol_error(w, what));
            }
        }
    }
    let mut detail = Vec::new();
    for (w, d) in digests.iter().enumerate() {
        let rank = links.link(w).rank;
        if d.steps != steps {
            detail.push(format!("rank {rank} applied {} steps", d.steps));
        } else if d.digest != digests[0].digest {
            detail.push(format!(
                "rank {rank} has weights md5 {}, rank {} has {}",
                d.digest,
                links.link(0).rank,
                digests[0].digest
            ));
        }
    }
    if !detail.is_empty() {
        return Err(ClusterError::Diverged {
            steps,
            detail: detail.join("; "),
        });
    }
    tracing::debug!(steps, digest = %digests[0].digest, "replicas agree");
    Ok(())
}

/// The replicas' `params` weights, after checking they all agree (taken from the lowest rank).
pub fn replica_weights(
    links: &mut Links,
    version: u64,
    steps: u64,
    params: usize,
) -> Result<Vec<f32>, ClusterError> {
    check_digests(links, version, steps)?;
    let id = links.task(0, version, task::Kind::Weights(WeightsTask {}))?;
    let values = match links.receive(0, id)? {
        (_, worker_message::Body::WeightsResult(r)) if r.id == id => decode_f32(&r.values),
        _ => None,
    };
    match values {
        Some(v) if v.len() == params => Ok(v),
        _ => Err(links.protocol_error(0, format!("expected {params} weights for task {id}"))),
    }
}
