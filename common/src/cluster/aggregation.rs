//! How gradients are combined, and the engine's limits: the choices a run makes once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the gradients of a step meet.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The coordinator sums the gradients, steps Adam and sends the weights (one optimizer).
    Coordinator,
    /// The coordinator sums the gradients and sends the sum back; every replica steps Adam.
    Allreduce,
    /// The workers all-reduce on their GPUs through NCCL; every replica steps Adam. The
    /// coordinator relays the NCCL id, shards the batches and checks the replicas agree.
    Nccl,
}

impl Aggregation {
    /// The name on the wire and in the results file.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Coordinator => "coordinator",
            Aggregation::Allreduce => "allreduce",
            Aggregation::Nccl => "nccl",
        }
    }

    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Aggregation::Coordinator,
            Aggregation::Allreduce,
            Aggregation::Nccl,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// Whether every replica steps the optimizer itself.
    pub fn replicated(self) -> bool {
        self != Aggregation::Coordinator
    }
}

/// The engine's choices and limits.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    /// How long all workers have to join.
    pub join_timeout: Duration,
    /// How long any worker has to answer a task.
    pub step_timeout: Duration,
    /// Where gradients meet.
    pub aggregation: Aggregation,
    /// Replicated runs: compare the replicas' weight digests every this many steps.
    pub digest_every: u64,
    /// NCCL runs: how long the communicator has to form.
    pub nccl_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [
            Aggregation::Coordinator,
            Aggregation::Allreduce,
            Aggregation::Nccl,
        ] {
            assert_eq!(Aggregation::from_name(a.name()), Some(a));
        }
        assert_eq!(Aggregation::from_name("gloo"), None);
        assert!(!Aggregation::Coordinator.replicated() && Aggregation::Nccl.replicated());
    }
}
