//! The LeNet-5 subnet shared by both branches of the siamese network.

use candle_core::{Module, Result, Tensor};
use candle_nn::Linear;

use super::conv_block::conv_relu_pool;
use super::params::ModelSpec;

/// The subnet's tensors, in [`ModelSpec::params`] order (first ten entries).
pub struct LeNetWeights<'a> {
    /// conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc1..fc3 weight and bias.
    pub t: &'a [Tensor],
}

/// LeNet-5 forward: two conv/ReLU/pool stages, then 400 -> 120 -> 84 -> out_width.
pub fn forward(spec: &ModelSpec, w: LeNetWeights<'_>, x: &Tensor) -> Result<Tensor> {
    let t = w.t;
    // The first stage's input is data, so no gradient is computed for it.
    let h = conv_relu_pool(x, &t[0], &t[1], spec.conv1(), false)?;
    let h = conv_relu_pool(&h, &t[2], &t[3], spec.conv2(), true)?;
    let h = h.flatten_from(1)?;
    let h = Linear::new(t[4].clone(), Some(t[5].clone()))
        .forward(&h)?
        .relu()?;
    let h = Linear::new(t[6].clone(), Some(t[7].clone()))
        .forward(&h)?
        .relu()?;
    Linear::new(t[8].clone(), Some(t[9].clone())).forward(&h)
}
