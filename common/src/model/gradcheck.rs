//! Tests that hold the fused conv kernel to Candle's own ops and the whole model's gradient to
//! finite differences (the classifier's are in `classcheck`).

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::conv_block::{conv_relu_pool, conv_relu_pool_reference};
use super::conv_geom::ConvGeom;
use super::network::Network;
use super::params::{Head, ModelSpec};

pub(super) fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// Runs both implementations on the same data and compares outputs and all three gradients.
fn compare_with_reference(geom: ConvGeom, n: usize, input_grad: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let dev = Device::Cpu;
    let x = Var::from_vec(
        random(&mut rng, n * geom.cin * geom.h * geom.w, 1.0),
        (n, geom.cin, geom.h, geom.w),
        &dev,
    )
    .unwrap();
    let w = Var::from_vec(
        random(&mut rng, geom.cout * geom.cin * 25, 0.3),
        (geom.cout, geom.cin, 5, 5),
        &dev,
    )
    .unwrap();
    let b = Var::from_vec(random(&mut rng, geom.cout, 0.1), geom.cout, &dev).unwrap();
    let probe = Tensor::from_vec(
        random(&mut rng, n * geom.cout * geom.out_h() * geom.out_w(), 1.0),
        (n, geom.cout, geom.out_h(), geom.out_w()),
        &dev,
    )
    .unwrap();

    let fused = conv_relu_pool(&x, &w, &b, geom, input_grad).unwrap();
    let reference = conv_relu_pool_reference(&x, &w, &b, geom.pad).unwrap();
    assert_eq!(fused.dims(), reference.dims());
    assert!(max_abs_diff(&fused, &reference) < 1e-5, "forward differs");

    let gf = (fused * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gr = (reference * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("weight", &w), ("bias", &b)] {
        let (a, r) = (gf.get(v).unwrap(), gr.get(v).unwrap());
        assert!(
            max_abs_diff(a, r) < 1e-4,
            "{name} gradient differs by {}",
            max_abs_diff(a, r)
        );
    }
    match gf.get(&x) {
        Some(a) => {
            assert!(input_grad, "input gradient computed although not asked for");
            assert!(
                max_abs_diff(a, gr.get(&x).unwrap()) < 1e-4,
                "input gradient differs"
            );
        }
        None => assert!(!input_grad, "input gradient missing"),
    }
}

#[test]
fn fused_stage_matches_candle_ops_mnist_first_layer() {
    compare_with_reference(
        ConvGeom {
            cin: 1,
            h: 28,
            w: 28,
            cout: 6,
            k: 5,
            pad: 2,
        },
        5,
        true,
    );
    compare_with_reference(
        ConvGeom {
            cin: 1,
            h: 28,
            w: 28,
            cout: 6,
            k: 5,
            pad: 2,
        },
        3,
        false,
    );
}

#[test]
fn fused_stage_matches_candle_ops_second_layer_and_cifar() {
    compare_with_reference(
        ConvGeom {
            cin: 6,
            h: 14,
            w: 14,
            cout: 16,
            k: 5,
            pad: 0,
        },
        7,
        true,
    );
    compare_with_reference(
        ConvGeom {
            cin: 3,
            h: 32,
            w: 32,
            cout: 6,
            k: 5,
            pad: 0,
        },
        4,
        true,
    );
}

#[test]
fn fused_stage_is_independent_of_thread_count() {
    let geom = ConvGeom {
        cin: 6,
        h: 14,
        w: 14,
        cout: 16,
        k: 5,
        pad: 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dev = Device::Cpu;
    let x = Tensor::from_vec(random(&mut rng, 9 * 6 * 14 * 14, 1.0), (9, 6, 14, 14), &dev).unwrap();
    let w = Tensor::from_vec(random(&mut rng, 16 * 150, 0.3), (16, 6, 5, 5), &dev).unwrap();
    let b = Tensor::from_vec(random(&mut rng, 16, 0.1), 16, &dev).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let a = one.install(|| conv_relu_pool(&x, &w, &b, geom, true).unwrap());
    let c = three.install(|| conv_relu_pool(&x, &w, &b, geom, true).unwrap());
    assert_eq!(max_abs_diff(&a, &c), 0.0);
}

/// Loss of the whole siamese model at the given weights, in f64 for the difference quotient.
fn model_loss(spec: ModelSpec, weights: &[f32], x: &Tensor, y: &Tensor) -> f64 {
    let net = Network::new(spec, weights, &Device::Cpu).unwrap();
    f64::from(net.pair_step(x, y).unwrap().loss_sum)
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
    let analytic = net.pair_step(&x, &y).unwrap().grad;
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

#[test]
fn weights_round_trip_through_network_and_checkpoint() {
    let spec = ModelSpec {
        channels: 3,
        size: 32,
        head: Head::Siamese { width: 10 },
    };
    let w = spec.init(1);
    let net = Network::new(spec, &w, &Device::Cpu).unwrap();
    assert_eq!(net.weights().unwrap(), w);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    spec.save(&w, &path).unwrap();
    assert_eq!(spec.load(&path).unwrap(), w);
    let other = ModelSpec {
        channels: 1,
        size: 28,
        head: Head::Siamese { width: 10 },
    };
    let err = other.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("conv1.weight") && err.contains("model.safetensors"),
        "{err}"
    );
    let _ = DType::F32;
}
