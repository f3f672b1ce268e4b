//! The results file every run writes (keys and units in docs/spec.md, "Results file").

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Figures of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's pairs (as computed during the epoch).
    pub train_loss: f64,
    /// Training pair accuracy over the epoch's pairs.
    pub train_accuracy: f64,
    /// Validation loss at the end of the epoch.
    pub val_loss: f64,
    /// Validation pair accuracy at the end of the epoch.
    pub val_accuracy: f64,
    /// Training seconds, evaluation excluded.
    pub seconds: f64,
    /// Training pairs per second.
    pub pairs_per_s: f64,
}

/// Figures on the test pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    /// Number of test pairs scored.
    pub pairs: usize,
    /// Fraction of pairs with (s > 0.5) == same.
    pub pair_accuracy: f64,
    /// ROC AUC of the similarity.
    pub roc_auc: f64,
    /// Nearest-class-mean accuracy of the test images' embeddings.
    pub ncm_accuracy: f64,
    /// Seconds to score the test pairs (after a warm-up pass).
    pub time_s: f64,
    /// Distinct images embedded per second while scoring.
    pub images_per_s: f64,
}

/// Where one worker's step time went, summed over the run (seconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerTiming {
    /// The worker's rank.
    pub rank: u32,
    /// host:pid and address.
    pub peer: String,
    /// Training steps it took part in.
    pub steps: u64,
    /// Forward and backward, as the worker measured it.
    pub compute_s: f64,
    /// Idle while slower workers finished.
    pub waiting_s: f64,
    /// Round trip minus compute: encoding, the network, decoding.
    pub transfer_s: f64,
    /// Idle while the coordinator averaged, stepped Adam and sent the weights.
    pub aggregation_s: f64,
}

/// Fraction of `compute + waiting + transfer + aggregation` that is not compute.
fn outside_compute(compute: f64, waiting: f64, transfer: f64, aggregation: f64) -> f64 {
    let total = compute + waiting + transfer + aggregation;
    if total > 0.0 {
        1.0 - compute / total
    } else {
        0.0
    }
}

impl WorkerTiming {
    /// Fraction of the step time spent outside compute.
    pub fn comm_share(&self) -> f64 {
        outside_compute(
            self.compute_s,
            self.waiting_s,
            self.transfer_s,
            self.aggregation_s,
        )
    }
}

/// Where step time went, summed over the run (seconds; for a cluster, the mean over workers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    /// Forward and backward.
    pub compute_s: f64,
    /// Waiting for the slowest shard or for data.
    pub waiting_s: f64,
    /// Moving gradients and weights.
    pub transfer_s: f64,
    /// Averaging gradients and the Adam update.
    pub aggregation_s: f64,
    /// The same split for each worker of a cluster.
    #[serde(default)]
    pub per_worker: Vec<WorkerTiming>,
}

impl StepTiming {
    /// The mean over workers, with the per-worker figures kept.
    pub fn from_workers(per_worker: Vec<WorkerTiming>) -> Self {
        let n = per_worker.len().max(1) as f64;
        let mean = |f: fn(&WorkerTiming) -> f64| per_worker.iter().map(f).sum::<f64>() / n;
        StepTiming {
            compute_s: mean(|w| w.compute_s),
            waiting_s: mean(|w| w.waiting_s),
            transfer_s: mean(|w| w.transfer_s),
            aggregation_s: mean(|w| w.aggregation_s),
            per_worker,
        }
    }

    /// Fraction of the step time spent outside compute.
    pub fn comm_share(&self) -> f64 {
        outside_compute(
            self.compute_s,
            self.waiting_s,
            self.transfer_s,
            self.aggregation_s,
        )
    }

    /// What accumulated after `before` (same workers), e.g. to leave warm-up steps out.
    pub fn since(&self, before: &StepTiming) -> StepTiming {
        let per_worker: Vec<WorkerTiming> = self
            .per_worker
            .iter()
            .map(|w| {
                let b = before.per_worker.iter().find(|b| b.rank == w.rank);
                let b = b.cloned().unwrap_or_default();
                WorkerTiming {
                    rank: w.rank,
                    peer: w.peer.clone(),
                    steps: w.steps.saturating_sub(b.steps),
                    compute_s: w.compute_s - b.compute_s,
                    waiting_s: w.waiting_s - b.waiting_s,
                    transfer_s: w.transfer_s - b.transfer_s,
                    aggregation_s: w.aggregation_s - b.aggregation_s,
                }
            })
            .collect();
        if per_worker.is_empty() {
            return StepTiming {
                compute_s: self.compute_s - before.compute_s,
                waiting_s: self.waiting_s - before.waiting_s,
                transfer_s: self.transfer_s - before.transfer_s,
                aggregation_s: self.aggregation_s - before.aggregation_s,
                per_worker,
            };
        }
        StepTiming::from_workers(per_worker)
    }
}

/// What happened to a worker's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// It joined the run (at the start or mid-run).
    Joined,
    /// It was declared lost: its stream failed or it missed its deadline.
    Lost,
}

/// A worker joining or being lost, as the results file lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipEvent {
    /// Optimizer steps completed when it happened.
    pub step: u64,
    /// The worker's rank.
    pub rank: u32,
    /// host:pid and address.
    pub peer: String,
    /// Joined or lost.
    pub event: Membership,
    /// Why, in words (the stream's error, the deadline missed; "joined" for joins).
    pub cause: String,
}

/// Everything a run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Dataset name.
    pub dataset: String,
    /// Number of workers that trained.
    pub workers: usize,
    /// Device of the workers (`cpu`, `cuda:0`).
    pub device: String,
    /// How gradients were combined (`local`, `coordinator`, `allreduce`, `nccl`).
    pub aggregation: String,
    /// The full configuration.
    pub config: serde_json::Value,
    /// Per-epoch figures.
    pub epochs: Vec<EpochRecord>,
    /// Test figures.
    pub test: TestRecord,
    /// Step-time split over the whole run.
    pub timing: StepTiming,
    /// Parameter count of the model.
    pub parameters: usize,
    /// Workers joining and lost during the run, in order (empty for a run in one process).
    #[serde(default)]
    pub membership: Vec<MembershipEvent>,
    /// Which weights the test figures are of, and whether training stopped early.
    #[serde(default)]
    pub selection: SelectionRecord,
}

/// Which weights were tested and why (`--select`, `--patience`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectionRecord {
    /// The rule: `last` or `best-val`.
    pub rule: String,
    /// The epoch whose weights were tested (0 when no epoch finished).
    pub epoch: usize,
    /// That epoch's validation pair accuracy.
    pub val_accuracy: f64,
    /// Whether `--patience` ended training before `--epochs`.
    pub stopped_early: bool,
    /// The tested weights as a weights-only file, where they are not the checkpoint's own.
    pub weights: Option<String>,
    /// Epochs after which a plateau of `--patience` epochs divided the learning rate by 10
    /// (`--lr-drops`).
    #[serde(default)]
    pub lr_drops: Vec<usize>,
}

impl RunResults {
    /// Writes the JSON atomically (temporary file, fsync, rename), creating the folder.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic_file::write_atomically(path, &json)
    }
}
