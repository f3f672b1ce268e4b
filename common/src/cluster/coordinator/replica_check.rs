//! Replicas that step Adam themselves (allreduce, nccl) could drift apart (a bug, a bad GPU):
//! the coordinator compares the md5 of their weights with its own state's (allreduce) or among
//! them (nccl), and fetches an NCCL run's state for checkpoints.

use super::answer_checks::checked_vector;
use super::pool::{Job, Sync, WorkerPool};
use crate::aggregation::{OptimizerState, weights_digest};
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{DigestTask, StateTask, task, worker_message};
use crate::cluster::protocol::wire::decode_f32;
use crate::optim::Adam;

/// Asks every ready replica (at weights `version`) for the md5 of its weights and its step
/// count; a count other than `version`, or a digest other than `expected` (or, without one,
/// than the others'), stops the run with the ranks that disagree.
pub fn check_digests(
    pool: &mut WorkerPool,
    version: u64,
    expected: Option<String>,
    sync: Sync<'_>,
) -> Result<String, ClusterError> {
    let ready = pool.ready();
    let jobs = ready
        .iter()
        .map(|_| Job {
            kind: task::Kind::Digest(DigestTask {}),
            version,
        })
        .collect();
    let assign: Vec<usize> = (0..ready.len()).collect();
    let batch = pool.send_jobs(jobs, &assign);
    let done = pool.collect(batch, sync, true)?;
    let mut reference = expected;
    let mut detail = Vec::new();
    for d in &done {
        let worker_message::Body::Digest(r) = &d.body else {
            return Err(ClusterError::Protocol {
                peer: d.peer.clone(),
                what: "expected a weights digest".into(),
            });
        };
        let want = reference.get_or_insert_with(|| r.digest.clone());
        if r.steps != version {
            detail.push(format!("rank {} applied {} steps", d.rank, r.steps));
        } else if r.digest != *want {
            detail.push(format!(
                "rank {} has weights md5 {}, expected {want}",
                d.rank, r.digest
            ));
        }
    }
    if !detail.is_empty() {
        return Err(ClusterError::Diverged {
            steps: version,
            detail: detail.join("; "),
        });
    }
    tracing::debug!(steps = version, "replicas agree");
    reference.ok_or_else(|| ClusterError::Setup("no replica answered for its digest".into()))
}

/// The replicas' weights and Adam state (`params` values each), after checking they all agree,
/// taken from one replica and checked against its own digest.
pub fn pull_state(
    pool: &mut WorkerPool,
    version: u64,
    params: usize,
) -> Result<OptimizerState, ClusterError> {
    // NCCL replicas cannot be brought up to date mid-run, so nobody is synced here.
    let none = |_: &super::pool::Member| Vec::new();
    let agreed = check_digests(pool, version, None, &none)?;
    let batch = pool.send_jobs(
        vec![Job {
            kind: task::Kind::State(StateTask {}),
            version,
        }],
        &[0],
    );
    let done = pool.collect(batch, &none, true)?;
    let Some(d) = done.first() else {
        return Err(ClusterError::Setup(
            "no replica answered for its state".into(),
        ));
    };
    let bad = |what: String| ClusterError::Protocol {
        peer: d.peer.clone(),
        what,
    };
    let worker_message::Body::State(r) = &d.body else {
        return Err(bad("expected its weights and Adam state".into()));
    };
    let decode = |b: &[u8], what: &str| {
        checked_vector(decode_f32(b), params).map_err(|why| bad(format!("{what}: {why}")))
    };
    let (p, m, v) = (
        decode(&r.params, "weights")?,
        decode(&r.adam_m, "Adam's first moments")?,
        decode(&r.adam_v, "Adam's second moments")?,
    );
    if r.steps != version {
        return Err(bad(format!(
            "a state after {} steps, not {version}",
            r.steps
        )));
    }
    // The weights must be the very ones every replica vouched for.
    let digest = weights_digest(&p);
    if digest != agreed {
        return Err(bad(format!(
            "weights with md5 {digest}, while every replica reported {agreed}"
        )));
    }
    let mut state = OptimizerState::new(p, 0.0);
    state.adam = Adam {
        m,
        v,
        t: r.steps,
        ..state.adam
    };
    tracing::debug!(%digest, "pulled the replicas' state");
    Ok(state)
}
