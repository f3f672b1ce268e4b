//! The LeNet-5 subnet shared by both branches of the siamese network.

use candle_core::{Result, Tensor};

use super::conv_block::conv_relu_pool;
use super::grouping::Grouping;
use super::linear::linear;
use super::params::{Head, ModelSpec};

/// Units of the two hidden fully connected layers, the ones dropout acts on.
pub const HIDDEN: [usize; 2] = [120, 84];

/// The subnet's tensors, in [`ModelSpec::params`] order (first ten entries).
pub struct LeNetWeights<'a> {
    /// conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc1..fc3 weight and bias.
    pub t: &'a [Tensor],
}

/// LeNet-5 forward: two conv/ReLU/pool stages, then 400 -> 120 -> 84 -> out_width. `groups`
/// says which images each leaf of the weight gradients sums (see `aggregation::tree`).
///
/// The siamese head leaves out the last layer's bias: a distance between two embeddings does not
/// change when both shift by the same vector, so that bias has an exactly zero gradient, and in
/// floating point that zero is rounding noise which Adam's normalisation turns into random
/// steps of size lr (and different replicas into different weights).
pub fn forward(
    spec: &ModelSpec,
    w: LeNetWeights<'_>,
    x: &Tensor,
    groups: Grouping,
) -> Result<Tensor> {
    forward_masked(spec, w, x, groups, None)
}

/// [`forward`] with dropout: each hidden layer's ReLU output is multiplied by its mask (`[n,
/// 120]` and `[n, 84]`, 0 for a dropped unit and 1/(1-p) for a kept one), which an element-wise
/// product keeps independent of how the batch is split.
pub fn forward_masked(
    spec: &ModelSpec,
    w: LeNetWeights<'_>,
    x: &Tensor,
    groups: Grouping,
    masks: Option<&[Tensor; 2]>,
) -> Result<Tensor> {
    let t = w.t;
    let drop = |h: Tensor, i: usize| match masks {
        Some(m) => h.mul(&m[i]),
        None => Ok(h),
    };
    // The first stage's input is data, so no gradient is computed for it.
    let h = conv_relu_pool(x, &t[0], &t[1], spec.conv1(), false, groups)?;
    let h = conv_relu_pool(&h, &t[2], &t[3], spec.conv2(), true, groups)?;
    let h = h.flatten_from(1)?;
    let h = drop(linear(&h, &t[4], &t[5], groups)?.relu()?, 0)?;
    let h = drop(linear(&h, &t[6], &t[7], groups)?.relu()?, 1)?;
    match spec.head {
        Head::Classifier => linear(&h, &t[8], &t[9], groups),
        // A zero bias of no gradient: one kernel serves both heads.
        Head::Siamese { .. } => linear(&h, &t[8], &t[9].detach().zeros_like()?, groups),
    }
}
