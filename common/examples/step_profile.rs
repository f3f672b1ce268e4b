//! Splits one SN-LeNet-5 training step into its parts and times each, on random data.
//!
//! `cargo run --release -p siamese-common --example step_profile -- [threads] [only]`
//!
//! `only` runs just the parts whose label contains it (e.g. `"conv2 forward+"`), for
//! `perf stat`, whose cycle counts a busy machine disturbs less than wall-clock times;
//! `SIAMESE_KERNELS=avx512|avx2|portable` picks the kernels.

use std::sync::OnceLock;
use std::time::Instant;

/// The second argument: only parts whose label contains it run.
static ONLY: OnceLock<String> = OnceLock::new();

use candle_core::{Device, Tensor, Var};
use siamese_common::aggregation::tree::{DEFAULT_MICRO_BATCH, MicroBatches};
use siamese_common::model::{ConvGeom, Grouping, ModelSpec, Network, conv_relu_pool};

fn time<R>(label: &str, reps: usize, mut f: impl FnMut() -> R) {
    if !label.contains(ONLY.get().map_or("", String::as_str)) {
        return;
    }
    f();
    let start = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!(
        "{label:<28} {:>8.3} ms",
        start.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() -> candle_core::Result<()> {
    let threads = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    ONLY.get_or_init(|| std::env::args().nth(2).unwrap_or_default());
    println!(
        "kernels: {:?}",
        siamese_common::model::KernelPath::selected()
    );
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let dev = Device::Cpu;
    let n = 128;
    let x = Tensor::rand(0f32, 1f32, (n, 1, 28, 28), &dev)?;
    let g1 = ConvGeom {
        cin: 1,
        h: 28,
        w: 28,
        cout: 6,
        k: 5,
        pad: 2,
    };
    let g2 = ConvGeom {
        cin: 6,
        h: 14,
        w: 14,
        cout: 16,
        k: 5,
        pad: 0,
    };
    let w1 = Var::from_tensor(&(Tensor::rand(-0.2f32, 0.2, (6, 1, 5, 5), &dev)?))?;
    let b1 = Var::from_tensor(&Tensor::zeros(6, candle_core::DType::F32, &dev)?)?;
    let w2 = Var::from_tensor(&(Tensor::rand(-0.08f32, 0.08, (16, 6, 5, 5), &dev)?))?;
    let b2 = Var::from_tensor(&Tensor::zeros(16, candle_core::DType::F32, &dev)?)?;
    // The 128 images as the 64 pairs of a training step.
    let groups = Grouping::stacked(MicroBatches::new(n / 2, DEFAULT_MICRO_BATCH).expect("per > 0"));
    let h1 = conv_relu_pool(&x, &w1, &b1, g1, false, groups)?;
    let h1v = Var::from_tensor(&h1.detach())?;
    time("conv1 forward", 50, || {
        conv_relu_pool(&x, &w1, &b1, g1, false, groups).unwrap()
    });
    time("conv2 forward", 50, || {
        conv_relu_pool(&h1v, &w2, &b2, g2, true, groups).unwrap()
    });
    time("conv1 forward+backward", 50, || {
        conv_relu_pool(&x, &w1, &b1, g1, false, groups)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    });
    time("conv2 forward+backward", 50, || {
        conv_relu_pool(&h1v, &w2, &b2, g2, true, groups)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    });

    let spec = ModelSpec::siamese(siamese_common::data::DatasetKind::Mnist, 10);
    let net = Network::new(spec, &spec.init(1), &dev).expect("network");
    let y = Tensor::from_vec(
        (0..64).map(|i| (i % 2) as f32).collect::<Vec<_>>(),
        64,
        &dev,
    )?;
    time("whole pair step", 50, || {
        net.pair_step(&x, &y, DEFAULT_MICRO_BATCH).unwrap()
    });
    time("embed 128 images", 50, || net.embed(&x).unwrap());
    if let Ok(ds) = siamese_common::data::load_dataset(
        siamese_common::data::DatasetKind::Mnist,
        std::path::Path::new("../shared/datasets/mnist"),
    ) {
        let labels = ds.train.labels().to_vec();
        let pool: Vec<u32> = (0..48_000).collect();
        let pairs = siamese_common::pairs::training_pairs(&labels, &pool, 1, 1).expect("pairs");
        let mut replica =
            siamese_common::train::Replica::new(spec, &spec.init(1), &dev).expect("replica");
        let mut i = 0;
        time("replica step, real MNIST", 50, || {
            i = (i + 64) % 40_000;
            replica
                .pair_gradient(&ds.train, &pairs[i..i + 64], DEFAULT_MICRO_BATCH)
                .unwrap()
        });
        let mut adam = siamese_common::optim::Adam::new(Default::default(), spec.num_params());
        let mut params = spec.init(1);
        time("replica step + adam + set", 50, || {
            i = (i + 64) % 40_000;
            let g = replica
                .pair_gradient(&ds.train, &pairs[i..i + 64], DEFAULT_MICRO_BATCH)
                .unwrap();
            adam.step(&mut params, &g.grad);
            replica.set_weights(&params).unwrap();
        });
    }
    Ok(())
}
