//! A worker's side of runs whose replicas step Adam themselves (allreduce, nccl): one
//! abstraction for "reduce these gradients" with two implementations, through the coordinator
//! and through NCCL, so the step below does not know which one runs.

use candle_core::Device;
use md5::{Digest, Md5};

use super::ClusterError;
use crate::optim::Adam;
use crate::train::Replica;

/// Where a replicated step's gradients meet.
pub enum Reducer {
    /// The worker sends its shard's gradient with its result; the coordinator sums all shards
    /// and sends the mean back (`ReducedGradient`), read by the task loop.
    Coordinator,
    /// NCCL all-reduce among the workers' GPUs, with a watchdog on each call.
    #[cfg(feature = "nccl")]
    Nccl(crate::nccl::NcclGroup, Watchdog),
}

/// Ends this worker when an NCCL call outlives its limit. A rank whose peer died blocks inside
/// the all-reduce forever and cannot even read the coordinator's Stop; exiting (which tears
/// the communicator down) is the one way out that needs no cooperation from the stuck thread.
#[cfg(feature = "nccl")]
pub struct Watchdog {
    /// Milliseconds since `epoch` when the current call started; 0 when none is running.
    started: std::sync::Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

#[cfg(feature = "nccl")]
impl Watchdog {
    /// Starts the watching thread for calls limited to `limit`.
    pub fn start(limit: std::time::Duration) -> Self {
        use std::sync::atomic::Ordering;
        let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let epoch = std::time::Instant::now();
        let watched = started.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let at = watched.load(Ordering::Acquire);
                let now = epoch.elapsed().as_millis() as u64;
                if at != 0 && now.saturating_sub(at) > limit.as_millis() as u64 {
                    tracing::error!(
                        limit_s = limit.as_secs(),
                        "an NCCL all-reduce did not finish in time: a peer is gone; exiting"
                    );
                    eprintln!(
                        "error: an NCCL all-reduce did not finish within {} s: a peer rank is gone",
                        limit.as_secs()
                    );
                    std::process::exit(3);
                }
            }
        });
        Watchdog { started, epoch }
    }

    fn arm(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.started
            .store(now.max(1), std::sync::atomic::Ordering::Release);
    }

    fn disarm(&self) {
        self.started.store(0, std::sync::atomic::Ordering::Release);
    }
}

impl Reducer {
    /// Whether the result message must carry the gradient (the coordinator sums it).
    pub fn coordinator_sums(&self) -> bool {
        matches!(self, Reducer::Coordinator)
    }

    /// The mean over the global batch of every replica's shard sum, for reducers that compute
    /// it here; `None` for the coordinator, whose mean arrives as a message.
    pub fn local_mean(
        &self,
        grad_sum: &[f32],
        global_pairs: usize,
        device: &Device,
    ) -> Result<Option<Vec<f32>>, ClusterError> {
        let _ = (grad_sum, global_pairs, device);
        match self {
            Reducer::Coordinator => Ok(None),
            #[cfg(feature = "nccl")]
            Reducer::Nccl(group, watchdog) => {
                let fail = |e: String| ClusterError::Setup(format!("NCCL all-reduce: {e}"));
                let t = candle_core::Tensor::from_slice(grad_sum, grad_sum.len(), device)
                    .map_err(|e| fail(e.to_string()))?;
                watchdog.arm();
                // Copying the result to the host waits for the all-reduce to finish.
                let total = match group.all_reduce_sum(&t) {
                    Ok(total) => total.to_vec1::<f32>().map_err(|e| fail(e.to_string())),
                    Err(e) => Err(fail(e.to_string())),
                };
                watchdog.disarm();
                let total = total?;
                let scale = 1.0 / global_pairs.max(1) as f64;
                Ok(Some(
                    total
                        .iter()
                        .map(|v| (f64::from(*v) * scale) as f32)
                        .collect(),
                ))
            }
        }
    }
}

/// A replica's own optimizer: identical on every rank because every rank starts from the same
/// weights and applies the same mean gradients in the same order.
pub struct Replicated {
    /// The weights this replica holds.
    pub params: Vec<f32>,
    adam: Adam,
    /// Steps applied.
    pub steps: u64,
    /// How gradients are reduced.
    pub reducer: Reducer,
}

impl Replicated {
    /// A fresh optimizer for `n` parameters with learning rate `lr` (the paper's other Adam
    /// constants).
    pub fn new(lr: f64, n: usize, reducer: Reducer) -> Self {
        Replicated {
            params: vec![0.0; n],
            adam: Adam::with_lr(lr, n),
            steps: 0,
            reducer,
        }
    }

    /// Applies one mean gradient to the weights and loads them into the replica.
    pub fn apply(&mut self, mean: &[f32], replica: &mut Replica) -> Result<(), ClusterError> {
        if mean.len() != self.params.len() {
            return Err(ClusterError::Protocol {
                peer: "coordinator".into(),
                what: format!(
                    "a reduced gradient of {} values for {} weights",
                    mean.len(),
                    self.params.len()
                ),
            });
        }
        if let Some(i) = mean.iter().position(|v| !v.is_finite()) {
            return Err(ClusterError::Protocol {
                peer: "the reduction".into(),
                what: format!("reduced gradient value {i} is {}", mean[i]),
            });
        }
        self.adam.step(&mut self.params, mean);
        self.steps += 1;
        replica
            .set_weights(&self.params)
            .map_err(|e| ClusterError::Setup(format!("loading weights: {e}")))
    }
}

/// Hex md5 of weights as little-endian f32 bytes: equal digests mean bit-identical replicas.
pub fn weights_digest(values: &[f32]) -> String {
    let mut h = Md5::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_tells_one_bit_apart() {
        let a = [1.0f32, 2.0, 3.0];
        let mut b = a;
        b[1] = f32::from_bits(b[1].to_bits() ^ 1);
        assert_eq!(weights_digest(&a), weights_digest(&a));
        assert_ne!(weights_digest(&a), weights_digest(&b));
        assert_eq!(weights_digest(&a).len(), 32);
    }
}
