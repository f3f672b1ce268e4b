//! Criterion benchmarks of the hot paths: one training step of a 64-pair batch, scoring 1,000
//! test pairs, the wire encoding of a gradient, the aggregation of worker gradients, and writing
//! a full checkpoint (what every epoch's end costs).
//!
//! `cargo bench -p siamese-common` (one compute thread unless `RAYON_NUM_THREADS` says more).
//! Uses the real MNIST in `../shared/datasets/mnist` when present, random images otherwise.

use std::hint::black_box;
use std::path::Path;

use candle_core::Device;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use siamese_common::aggregation::OptimizerState;
use siamese_common::aggregation::tree::{DEFAULT_MICRO_BATCH, combine};
use siamese_common::aggregation::{check_finite, mean_of_sum};
use siamese_common::cluster::protocol::wire::{decode_f32, encode_f32};
use siamese_common::data::{DatasetKind, ImageSet, TestAugment, load_dataset};
use siamese_common::model::ModelSpec;
use siamese_common::pairs::{test_pairs, training_pairs};
use siamese_common::train::eval::similarity;
use siamese_common::train::{
    BestWeights, Checkpoint, EpochProgress, Position, Replica, RunIdentity,
};

fn images() -> (ImageSet, ImageSet) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/mnist");
    if let Ok(ds) = load_dataset(DatasetKind::Mnist, &dir) {
        return (ds.train, ds.test);
    }
    let make = |n: usize| {
        let px = (0..n * 784)
            .map(|i| ((i * 2654435761) % 256) as u8)
            .collect();
        ImageSet::new(px, (0..n).map(|i| (i % 10) as u8).collect(), 1, 28, 28)
            .expect("synthetic set")
    };
    (make(10_000), make(10_000))
}

fn benches(c: &mut Criterion) {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let (train, test) = images();
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let weights = spec.init(1);
    let mut replica = Replica::new(spec, &weights, &Device::Cpu).expect("replica");
    let pool: Vec<u32> = (0..train.len().min(48_000) as u32).collect();
    let pairs = training_pairs(train.labels(), &pool, 1, 1).expect("pairs");

    let mut at = 0;
    c.bench_function("train step, 64 pairs (forward + backward)", |b| {
        b.iter(|| {
            at = (at + 64) % (pairs.len() - 64);
            black_box(
                replica
                    .pair_gradient(&train, &pairs[at..at + 64], DEFAULT_MICRO_BATCH)
                    .expect("step"),
            )
        })
    });

    let scored = test_pairs(test.labels()).expect("test pairs");
    let scored = &scored[..1000];
    c.bench_function("score 1,000 test pairs (embed each image once)", |b| {
        b.iter(|| {
            let mut ids: Vec<u32> = scored.iter().flat_map(|p| [p.a, p.b]).collect();
            ids.sort_unstable();
            ids.dedup();
            let emb = replica
                .embed(&test, &ids, TestAugment::None)
                .expect("embed");
            let row = |i: u32| {
                let r = ids.binary_search(&i).unwrap_or(0);
                &emb[r * 10..(r + 1) * 10]
            };
            black_box(
                scored
                    .iter()
                    .map(|p| similarity(row(p.a), row(p.b), -2.0, 2.0))
                    .sum::<f32>(),
            )
        })
    });

    let grad = replica
        .pair_gradient(&train, &pairs[..64], DEFAULT_MICRO_BATCH)
        .expect("step")
        .grad;
    c.bench_function("gradient encode + decode for the wire", |b| {
        b.iter(|| black_box(decode_f32(&encode_f32(black_box(&grad)))))
    });
    // Four workers' blocks of an 8-leaf tree (two leaves each), checked, combined and divided:
    // the coordinator's part of a step between the last gradient and the mean. The copies are
    // made outside the timing, as the coordinator receives them.
    let parts: Vec<(std::ops::Range<usize>, Vec<f32>)> =
        (0..4).map(|w| (2 * w..2 * w + 2, grad.clone())).collect();
    c.bench_function("aggregate 4 worker gradients", |b| {
        b.iter_batched(
            || parts.clone(),
            |parts| {
                for (_, g) in &parts {
                    check_finite(g).expect("finite");
                }
                let root = combine(8, black_box(parts)).expect("a partition");
                black_box(mean_of_sum(&root, 64))
            },
            BatchSize::SmallInput,
        )
    });
    // One Adam update of every parameter: what each replica does between the mean's arrival and
    // its next forward.
    let mut state = OptimizerState::new(weights.clone(), 1e-3);
    c.bench_function(
        "apply a mean: finite check + Adam step over the model",
        |b| b.iter(|| state.apply(black_box(&grad))),
    );
    let checkpoint = Checkpoint {
        identity: RunIdentity {
            model_version: siamese_common::model::MODEL_VERSION.into(),
            dataset: "mnist".into(),
            data_digest: "bench".into(),
            seed: 1,
            batch_size: 64,
            micro_batch: 8,
            embedding: 10,
            lr: 1e-3,
            train_subset: None,
            augment: Default::default(),
            crop_pad: None,
            weight_decay: 0.0,
            lr_schedule: Default::default(),
            dropout: 0.0,
            ema: 0.0,
            lr_drop_after: Vec::new(),
            train_on_validation: false,
            schedule_epochs: None,
        },
        best: Some(BestWeights {
            epoch: 1,
            val_accuracy: 0.5,
            params: weights.clone(),
        }),
        spec,
        state: OptimizerState::new(weights.clone(), 1e-3),
        position: Position::default(),
        progress: EpochProgress::default(),
        epochs: Vec::new(),
        membership: Vec::new(),
        lr_drops: Vec::new(),
        average: None,
    };
    let dir = std::env::temp_dir().join(format!("siamese-bench-{}", std::process::id()));
    let path = dir.join("checkpoint.safetensors");
    c.bench_function(
        "write a checkpoint (weights + Adam + best, fsync, rename)",
        |b| b.iter(|| checkpoint.write(black_box(&path)).expect("write")),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().sample_size(30);
    targets = benches
}
criterion_main!(hot_paths);
