//! The AVX-512 kernels against the AVX2 kernels, byte for byte: workers on different CPUs take
//! different paths and must still train the same model. Inputs are random, of LeNet-5's real
//! shapes (MNIST 1x28x28 and CIFAR 3x32x32), in batches that are not multiples of 16.

use candle_core::{Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::inputs::{images, random};
use crate::aggregation::tree::MicroBatches;
use crate::data::DatasetKind;
use crate::model::conv_block::conv_relu_pool;
use crate::model::grouping::Grouping;
use crate::model::kernel_path::{KernelPath, forced_pool};
use crate::model::linear::linear;
use crate::model::network::Network;
use crate::model::params::ModelSpec;

/// The bits of every value of `t`.
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// `f`'s result on the AVX-512 path and on the AVX2 path (on 2 threads each), or `None` where
/// this CPU lacks AVX-512.
fn on_both<R: Send>(f: impl Fn() -> R + Sync) -> Option<(R, R)> {
    if !KernelPath::Avx512.supported() {
        eprintln!("no AVX-512 on this CPU: nothing to compare");
        return None;
    }
    let wide = forced_pool(KernelPath::Avx512, 2).install(&f);
    let narrow = forced_pool(KernelPath::Avx2, 2).install(&f);
    Some((wide, narrow))
}

/// Asserts two lists of named bit vectors are equal, naming the first difference.
fn assert_same(wide: &[(&str, Vec<u32>)], narrow: &[(&str, Vec<u32>)], what: &str) {
    for ((name, a), (_, b)) in wide.iter().zip(narrow) {
        assert_eq!(a.len(), b.len(), "{what}: {name} lengths");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!(
                "{what}: {name}[{i}] is {:e} on AVX-512, {:e} on AVX2",
                f32::from_bits(a[i]),
                f32::from_bits(b[i])
            );
        }
    }
}

/// One fused stage, forward and all three gradients (the input gradient included), on both paths.
fn conv_stage_is_the_same(geom: crate::model::ConvGeom, n: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let x = Var::from_vec(
        random(&mut rng, n * geom.in_len(), 1.0),
        (n, geom.cin, geom.h, geom.w),
        &dev,
    )
    .unwrap();
    let wlen = geom.cout * geom.cin * geom.k * geom.k;
    let w = Var::from_vec(
        random(&mut rng, wlen, 0.3),
        (geom.cout, geom.cin, geom.k, geom.k),
        &dev,
    )
    .unwrap();
    let b = Var::from_vec(random(&mut rng, geom.cout, 0.1), geom.cout, &dev).unwrap();
    let probe = Tensor::from_vec(
        random(&mut rng, n * geom.out_len(), 1.0),
        (n, geom.cout, geom.out_h(), geom.out_w()),
        &dev,
    )
    .unwrap();
    let groups = Grouping::flat(MicroBatches::new(n, 8).unwrap());
    let run = || {
        let y = conv_relu_pool(&x, &w, &b, geom, true, groups).unwrap();
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        vec![
            ("output", bits(&y)),
            ("input gradient", bits(grads.get(&x).unwrap())),
            ("weight gradient", bits(grads.get(&w).unwrap())),
            ("bias gradient", bits(grads.get(&b).unwrap())),
        ]
    };
    if let Some((wide, narrow)) = on_both(run) {
        assert_same(&wide, &narrow, &format!("{geom:?}, {n} images"));
    }
}

#[test]
fn conv_stages_are_bit_identical_on_avx512_and_avx2() {
    for (spec, n) in [
        (ModelSpec::siamese(DatasetKind::Mnist, 10), 37),
        (ModelSpec::siamese(DatasetKind::Cifar10, 10), 21),
    ] {
        conv_stage_is_the_same(spec.conv1(), n, 1);
        conv_stage_is_the_same(spec.conv2(), n, 2);
    }
}

#[test]
fn linear_layer_is_bit_identical_on_avx512_and_avx2() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dev = Device::Cpu;
    // fc1 of CIFAR (400 -> 120) and fc3 (84 -> 10), 45 rows in micro-batches of 8; and an odd
    // output count, which leaves a remainder after the forward's blocks of two outputs.
    for (n, k, m) in [(45, 400, 120), (45, 84, 10), (45, 120, 83)] {
        let x = Var::from_vec(random(&mut rng, n * k, 1.0), (n, k), &dev).unwrap();
        let w = Var::from_vec(random(&mut rng, m * k, 0.2), (m, k), &dev).unwrap();
        let b = Var::from_vec(random(&mut rng, m, 0.1), m, &dev).unwrap();
        let probe = Tensor::from_vec(random(&mut rng, n * m, 1.0), (n, m), &dev).unwrap();
        let groups = Grouping::flat(MicroBatches::new(n, 8).unwrap());
        let run = || {
            let y = linear(&x, &w, &b, groups).unwrap();
            let grads = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            vec![
                ("output", bits(&y)),
                ("input gradient", bits(grads.get(&x).unwrap())),
                ("weight gradient", bits(grads.get(&w).unwrap())),
                ("bias gradient", bits(grads.get(&b).unwrap())),
            ]
        };
        if let Some((wide, narrow)) = on_both(run) {
            assert_same(&wide, &narrow, &format!("linear {k} -> {m}"));
        }
    }
}

#[test]
fn whole_model_steps_are_bit_identical_on_avx512_and_avx2() {
    for kind in [DatasetKind::Mnist, DatasetKind::Cifar10] {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let spec = ModelSpec::siamese(kind, 10);
        let pairs = 27;
        let x = images(&mut rng, spec, 2 * pairs);
        let same: Vec<f32> = (0..pairs).map(|_| (rng.next_u64() % 2) as f32).collect();
        let y = Tensor::from_vec(same, pairs, &Device::Cpu).unwrap();
        let net = Network::new(spec, &spec.init(3), &Device::Cpu).unwrap();
        let run = || {
            let step = net.pair_step(&x, &y, 8).unwrap();
            let f = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            vec![
                ("embedding", bits(&net.embed(&x).unwrap())),
                ("similarity", f(&step.similarity)),
                ("loss", vec![step.loss_sum.to_bits()]),
                ("gradient", f(&step.grad)),
            ]
        };
        if let Some((wide, narrow)) = on_both(run) {
            assert_same(&wide, &narrow, &format!("{kind:?} pair step"));
        }
        let spec = ModelSpec::classifier(kind);
        let net = Network::new(spec, &spec.init(4), &Device::Cpu).unwrap();
        let x = images(&mut rng, spec, 19);
        let labels: Vec<u32> = (0..19).map(|i| i % 10).collect();
        let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        let run = || {
            let step = net.class_step(&x, &labels).unwrap();
            let grad = step.grad.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            vec![("loss", vec![step.loss_sum.to_bits()]), ("gradient", grad)]
        };
        if let Some((wide, narrow)) = on_both(run) {
            assert_same(&wide, &narrow, &format!("{kind:?} classifier step"));
        }
    }
}
