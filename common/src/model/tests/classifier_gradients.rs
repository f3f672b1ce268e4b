//! Tests of the plain LeNet-5 classifier's step: its loss against a hand-computed cross-entropy,
//! its gradient against Candle's own ops and against finite differences.

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::finite_differences::assert_matches_finite_differences;
use super::inputs::images;
use crate::data::DatasetKind;
use crate::model::conv_block::conv_relu_pool_reference;
use crate::model::kernel_path::{forced_pool, simd_paths};
use crate::model::loss::cross_entropy_sum;
use crate::model::network::Network;
use crate::model::params::ModelSpec;

/// The classifier's logits through Candle's own conv, pool and matmul, in the dtype of `t` and
/// `x`: the same function as `lenet::forward`, built from ops that also run in f64.
fn reference_logits(spec: ModelSpec, t: &[Tensor], x: &Tensor) -> Tensor {
    let h = conv_relu_pool_reference(x, &t[0], &t[1], spec.conv1().pad).unwrap();
    let h = conv_relu_pool_reference(&h, &t[2], &t[3], 0).unwrap();
    let mut h = h.flatten_from(1).unwrap();
    for (i, layer) in [4, 6, 8].into_iter().enumerate() {
        h = h.matmul(&t[layer].t().unwrap()).unwrap();
        h = h.broadcast_add(&t[layer + 1]).unwrap();
        if i < 2 {
            h = h.relu().unwrap();
        }
    }
    h
}

/// The parameter tensors of a flat weight vector, in `dtype`.
fn tensors(spec: ModelSpec, weights: &[f32], dtype: DType) -> Vec<Tensor> {
    spec.params()
        .iter()
        .map(|p| {
            Tensor::from_slice(
                &weights[p.offset..p.offset + p.len()],
                p.shape.as_slice(),
                &Device::Cpu,
            )
            .and_then(|t| t.to_dtype(dtype))
            .unwrap()
        })
        .collect()
}

#[test]
fn classifier_gradient_matches_candle_ops_and_finite_differences() {
    for path in simd_paths() {
        forced_pool(path, 2).install(classifier_gradient_against_candle_and_finite_differences);
    }
}

fn classifier_gradient_against_candle_and_finite_differences() {
    let spec = ModelSpec::classifier(DatasetKind::Mnist);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let weights = spec.init(7);
    let x = images(&mut rng, spec, 3);
    let labels = Tensor::new(&[3u32, 0, 9], &Device::Cpu).unwrap();
    let net = Network::new(spec, &weights, &Device::Cpu).unwrap();
    let step = net.class_step(&x, &labels).unwrap();
    assert!(step.correct <= 3);
    // Every tensor, fc3.bias included, feeds the logits.
    let fc3_bias = spec.params()[9].offset;
    assert!(step.grad[fc3_bias..].iter().any(|&g| g != 0.0));

    // Our kernels against Candle's ops and autograd on the same f32 weights: equal to rounding.
    let vars: Vec<Var> = tensors(spec, &weights, DType::F32)
        .into_iter()
        .map(|t| Var::from_tensor(&t).unwrap())
        .collect();
    let t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = cross_entropy_sum(&reference_logits(spec, &t, &x), &labels).unwrap();
    let want = loss.to_scalar::<f32>().unwrap();
    assert!(
        (step.loss_sum - want).abs() < 1e-5,
        "{} vs {want}",
        step.loss_sum
    );
    let grads = loss.backward().unwrap();
    for (p, v) in spec.params().iter().zip(&vars) {
        let g = grads.get(v.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ours = &step.grad[p.offset..p.offset + p.len()];
        let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let diff = g
            .iter()
            .zip(ours)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{}: {diff:e} against {scale:e}",
            p.name
        );
    }

    // Finite differences of the same function in f64. In f32 they do not resolve the
    // classifier: its loss near 3 ln 10 has an ulp of 4.8e-7, which wants steps of 1e-3 or more,
    // and a conv1 weight or bias reaches every position of every image, so such a step crosses
    // enough ReLU and pool switches, each too small to flag, to bend the quotient by several
    // percent (half of 16 seeds failed at h = 2e-3, while the gradient above matched Candle's
    // to 1e-7). In f64 a step of 2^-16 is free of rounding and almost never crosses a switch;
    // a power of two also moves the f32 weight by exactly h.
    let x64 = x.to_dtype(DType::F64).unwrap();
    let loss64 = |w: &[f32]| {
        let z = reference_logits(spec, &tensors(spec, w, DType::F64), &x64);
        let l = cross_entropy_sum(&z, &labels).unwrap();
        l.to_scalar::<f64>().unwrap()
    };
    assert!((loss64(&weights) - f64::from(want)).abs() < 1e-5);
    let how = (1.0 / 65536.0, &[][..]);
    assert_matches_finite_differences(spec, &weights, &step.grad, loss64, how, &mut rng);
}

#[test]
fn classifier_loss_is_the_hand_computed_cross_entropy() {
    let spec = ModelSpec::classifier(DatasetKind::Cifar10);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let weights = spec.init(2);
    let x = images(&mut rng, spec, 2);
    let net = Network::new(spec, &weights, &Device::Cpu).unwrap();
    let logits = net.embed(&x).unwrap().to_vec2::<f32>().unwrap();
    let labels = [4u32, 7];
    // -ln softmax(z)[y] = ln(sum_k e^(z_k)) - z_y, in f64 from the network's own logits.
    let want: f64 = logits
        .iter()
        .zip(labels)
        .map(|(z, y)| {
            let lse = z.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            lse - f64::from(z[y as usize])
        })
        .sum();
    let best = |z: &Vec<f32>| (0..10).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap() as u32;
    let correct = logits.iter().zip(labels).filter(|(z, y)| best(z) == *y);
    let step = net
        .class_step(&x, &Tensor::new(&labels, &Device::Cpu).unwrap())
        .unwrap();
    assert!(
        (f64::from(step.loss_sum) - want).abs() < 1e-5,
        "{} vs {want}",
        step.loss_sum
    );
    assert_eq!(step.correct, correct.count());
}

#[test]
fn the_heads_refuse_each_others_steps() {
    let dev = Device::Cpu;
    let siamese = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let classifier = ModelSpec::classifier(DatasetKind::Mnist);
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap();
    let net = Network::new(siamese, &siamese.init(1), &dev).unwrap();
    let labels = Tensor::new(&[1u32, 2], &dev).unwrap();
    let err = net.class_step(&x, &labels).unwrap_err().to_string();
    assert!(err.contains("classifier head"), "{err}");
    let net = Network::new(classifier, &classifier.init(1), &dev).unwrap();
    let same = Tensor::new(&[1.0f32], &dev).unwrap();
    assert!(net.pair_step(&x, &same, 8).is_err());
}
