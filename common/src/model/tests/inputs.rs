//! Random inputs for the model's tests, seeded so failures reproduce.

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use crate::model::params::ModelSpec;

/// `n` values uniform in `[-scale, scale)`.
pub(super) fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// `n` random images of the spec's shape with pixels in [0, 1].
pub(super) fn images(rng: &mut ChaCha8Rng, spec: ModelSpec, n: usize) -> Tensor {
    let len = spec.channels * spec.size * spec.size;
    Tensor::from_vec(
        random(rng, n * len, 0.5)
            .into_iter()
            .map(|v| v + 0.5)
            .collect::<Vec<_>>(),
        (n, spec.channels, spec.size, spec.size),
        &Device::Cpu,
    )
    .unwrap()
}

/// Largest absolute elementwise difference of two tensors of one shape.
pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
