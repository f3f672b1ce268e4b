//! The fused conv stage held to Candle's own ops, and to itself across thread counts.

use candle_core::{Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::inputs::{max_abs_diff, random};
use crate::aggregation::tree::MicroBatches;
use crate::model::conv_block::{conv_relu_pool, conv_relu_pool_reference};
use crate::model::conv_geom::ConvGeom;
use crate::model::grouping::Grouping;
use crate::model::kernel_path::{KernelPath, forced_pool, simd_paths};
use crate::model::simd::portable_pool;

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

    let groups = Grouping::flat(MicroBatches::new(n, 2).unwrap());
    let fused = conv_relu_pool(&x, &w, &b, geom, input_grad, groups).unwrap();
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

/// Runs `f` on 2 threads taking each SIMD path this CPU has (AVX-512 and AVX2).
fn on_every_simd_path(f: impl Fn() + Sync) {
    for path in simd_paths() {
        forced_pool(path, 2).install(&f);
    }
}

#[test]
fn fused_stage_matches_candle_ops_mnist_first_layer() {
    on_every_simd_path(mnist_first_layer);
}

fn mnist_first_layer() {
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
    on_every_simd_path(second_layer_and_cifar);
}

fn second_layer_and_cifar() {
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
fn portable_path_matches_candle_ops() {
    let pool = portable_pool(2);
    assert!(
        pool.install(KernelPath::current) == KernelPath::Portable,
        "the pool must select the portable kernels"
    );
    let first = ConvGeom {
        cin: 1,
        h: 28,
        w: 28,
        cout: 6,
        k: 5,
        pad: 2,
    };
    let second = ConvGeom {
        cin: 6,
        h: 14,
        w: 14,
        cout: 16,
        k: 5,
        pad: 0,
    };
    pool.install(|| {
        compare_with_reference(first, 5, false);
        compare_with_reference(second, 7, true);
    });
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
    let groups = Grouping::flat(MicroBatches::new(9, 2).unwrap());
    let a = one.install(|| conv_relu_pool(&x, &w, &b, geom, true, groups).unwrap());
    let c = three.install(|| conv_relu_pool(&x, &w, &b, geom, true, groups).unwrap());
    assert_eq!(max_abs_diff(&a, &c), 0.0);
}
