//! Where a run's gradients meet and who steps Adam: the choice a run makes once.

use serde::{Deserialize, Serialize};

/// Where the gradients of a step meet, and who steps Adam on their mean.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The coordinator sums the gradients, steps the one Adam and sends the weights
    /// (`--aggregation coordinator`).
    #[value(name = "coordinator")]
    #[serde(rename = "coordinator")]
    CentralAdam,
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
            Aggregation::CentralAdam => "coordinator",
            Aggregation::Allreduce => "allreduce",
            Aggregation::Nccl => "nccl",
        }
    }

    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Aggregation::CentralAdam,
            Aggregation::Allreduce,
            Aggregation::Nccl,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// Whether every replica steps the optimizer itself.
    pub fn replicated(self) -> bool {
        self != Aggregation::CentralAdam
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [
            Aggregation::CentralAdam,
            Aggregation::Allreduce,
            Aggregation::Nccl,
        ] {
            assert_eq!(Aggregation::from_name(a.name()), Some(a));
        }
        assert_eq!(Aggregation::from_name("gloo"), None);
        assert!(!Aggregation::CentralAdam.replicated() && Aggregation::Nccl.replicated());
    }
}
