//! A worker's side of runs whose replicas step Adam themselves (allreduce, nccl): one
//! abstraction for "reduce these gradients" with two implementations, summed by the coordinator
//! or all-reduced through NCCL, so the task loop does not know which one runs.

use candle_core::Device;

#[cfg(feature = "nccl")]
use crate::aggregation::mean_gradient;
use crate::cluster::ClusterError;

/// Where a replicated step's gradients meet.
pub enum Reducer {
    /// The worker sends its shard's gradient with its result; the coordinator sums all shards
    /// and sends the mean back (`ReducedGradient`), read by the task loop.
    SumOnCoordinator,
    /// NCCL all-reduce among the workers' GPUs, with a watchdog on each call.
    #[cfg(feature = "nccl")]
    Nccl(crate::cluster::nccl::NcclGroup, super::watchdog::Watchdog),
}

impl Reducer {
    /// Whether the result message must carry the gradient (the coordinator sums it).
    pub fn coordinator_sums(&self) -> bool {
        matches!(self, Reducer::SumOnCoordinator)
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
            Reducer::SumOnCoordinator => Ok(None),
            #[cfg(feature = "nccl")]
            Reducer::Nccl(group, watchdog) => {
                let t = candle_core::Tensor::from_slice(grad_sum, grad_sum.len(), device)
                    .map_err(crate::model::ModelError::from)?;
                watchdog.arm();
                // Copying the result to the host waits for the all-reduce to finish.
                let total = group.all_reduce_sum(&t).map(|total| total.to_vec1::<f32>());
                watchdog.disarm();
                let total = total?.map_err(crate::model::ModelError::from)?;
                Ok(Some(mean_gradient(&[total], global_pairs)))
            }
        }
    }
}
