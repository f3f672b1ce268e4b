//! The mean of an NCCL step: every rank's gradient summed on the GPUs by an all-reduce, under a
//! watchdog, then divided by the global batch as every other mode divides.

use candle_core::Device;

#[cfg(feature = "nccl")]
use crate::aggregation::mean_of_sum;
use crate::cluster::ClusterError;

/// A rank's NCCL communicator and the watchdog on its calls.
pub struct NcclReducer {
    #[cfg(feature = "nccl")]
    group: crate::cluster::nccl::NcclGroup,
    #[cfg(feature = "nccl")]
    watchdog: super::watchdog::Watchdog,
}

impl NcclReducer {
    /// A reducer over a formed communicator.
    #[cfg(feature = "nccl")]
    pub fn new(
        group: crate::cluster::nccl::NcclGroup,
        watchdog: super::watchdog::Watchdog,
    ) -> Self {
        NcclReducer { group, watchdog }
    }

    /// The mean over the global batch of every rank's summed-loss gradient.
    pub fn mean(
        &self,
        grad_sum: &[f32],
        global_pairs: usize,
        device: &Device,
    ) -> Result<Vec<f32>, ClusterError> {
        #[cfg(feature = "nccl")]
        {
            let t = candle_core::Tensor::from_slice(grad_sum, grad_sum.len(), device)
                .map_err(crate::model::ModelError::from)?;
            self.watchdog.arm();
            // Copying the result to the host waits for the all-reduce to finish.
            let total = self
                .group
                .all_reduce_sum(&t)
                .map(|total| total.to_vec1::<f32>());
            self.watchdog.disarm();
            let total = total?.map_err(crate::model::ModelError::from)?;
            Ok(mean_of_sum(&total, global_pairs))
        }
        #[cfg(not(feature = "nccl"))]
        {
            let _ = (grad_sum, global_pairs, device);
            Err(ClusterError::Setup(
                "this worker was built without NCCL".into(),
            ))
        }
    }
}
