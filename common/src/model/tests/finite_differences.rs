//! The siamese model's gradient held to finite differences of its loss (the classifier's are
//! in `classifier_gradients`).

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::inputs::images;
use crate::model::kernel_path::{forced_pool, simd_paths};
use crate::model::network::Network;
use crate::model::params::{Head, ModelSpec};

/// Loss of the whole siamese model at the given weights, in f64 for the difference quotient.
fn model_loss(spec: ModelSpec, weights: &[f32], x: &Tensor, y: &Tensor) -> f64 {
    let net = Network::new(spec, weights, &Device::Cpu).unwrap();
    f64::from(net.pair_step(x, y, 2).unwrap().loss_sum)
}

/// Holds `analytic` to central difference quotients of `loss` at the coordinates with the largest
/// gradient in every tensor, where the quotient is far above f32 rounding noise, plus random
/// ones. Tensors named in `skip` are left out.
///
/// Where the one-sided quotients disagree, a ReLU or pool switch lies within the step `h` (a
/// kink) and the coordinate says nothing about the gradient; elsewhere the central quotient must
/// match. The loss is an f32, so a quotient over `h` resolves steps of about ulp(loss) / h: `h`
/// must be large enough for that to stay well under the tolerance, and small enough that no
/// crowd of kinks, each too small to flag, bends the quotient.
pub(super) fn assert_matches_finite_differences(
    spec: ModelSpec,
    weights: &[f32],
    analytic: &[f32],
    loss: impl Fn(&[f32]) -> f64,
    (h, skip): (f32, &[&str]),
    rng: &mut ChaCha8Rng,
) {
    assert_eq!(analytic.len(), spec.num_params());
    let base = loss(weights);
    let quotients = |at: usize| {
        let mut plus = weights.to_vec();
        plus[at] += h;
        let mut minus = weights.to_vec();
        minus[at] -= h;
        let (lp, lm) = (loss(&plus), loss(&minus));
        let h = f64::from(h);
        ((lp - base) / h, (base - lm) / h, (lp - lm) / (2.0 * h))
    };
    let (mut checked, mut kinks) = (0, 0);
    for p in spec.params() {
        if skip.contains(&p.name) {
            continue;
        }
        let slice = &analytic[p.offset..p.offset + p.len()];
        let largest = (0..p.len())
            .max_by(|&a, &b| slice[a].abs().total_cmp(&slice[b].abs()))
            .unwrap();
        let mut coords = vec![largest];
        coords.extend((0..3).map(|_| (rng.next_u64() % p.len() as u64) as usize));
        for i in coords {
            let (right, left, central) = quotients(p.offset + i);
            let an = f64::from(slice[i]);
            let tol = |v: f64| 2e-4 + 2e-2 * v.abs();
            if (right - left).abs() > tol(central) {
                kinks += 1;
                continue;
            }
            checked += 1;
            assert!(
                (central - an).abs() <= tol(an),
                "{}[{i}]: analytic {an:.6e}, finite difference {central:.6e}",
                p.name
            );
        }
    }
    assert!(
        checked >= 2 * kinks,
        "{kinks} kinks against {checked} checked coordinates"
    );
}

#[test]
fn model_gradient_matches_finite_differences() {
    for path in simd_paths() {
        forced_pool(path, 2).install(model_gradient_against_finite_differences);
    }
}

fn model_gradient_against_finite_differences() {
    let spec = ModelSpec {
        channels: 1,
        size: 28,
        head: Head::Siamese { width: 10 },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let weights = spec.init(5);
    let x = images(&mut rng, spec, 6);
    let y = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
    let net = Network::new(spec, &weights, &Device::Cpu).unwrap();
    let analytic = net.pair_step(&x, &y, 2).unwrap().grad;
    // fc3.bias is not used by the siamese head: its gradient is zero, see `lenet::forward`.
    // The loss is near 1 (ulp 1.2e-7), so h = 5e-3 resolves quotients to about 2e-5.
    let loss = |w: &[f32]| model_loss(spec, w, &x, &y);
    let how = (5e-3, &["fc3.bias"][..]);
    assert_matches_finite_differences(spec, &weights, &analytic, loss, how, &mut rng);
    assert_eq!(
        analytic[spec.params()[9].offset..][..10],
        [0.0; 10],
        "fc3.bias must get no gradient"
    );
}
