//! The siamese gradient of a batch, bit for bit, whatever the split among workers (each sending
//! the canonical blocks of its share) and whatever the number of threads.

use std::ops::Range;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::inputs::images;
use crate::aggregation::tree::tests::balanced;
use crate::aggregation::tree::{MicroBatches, blocks, combine};
use crate::data::DatasetKind;
use crate::model::kernel_path::{forced_pool, simd_paths};
use crate::model::network::Network;
use crate::model::params::ModelSpec;
use crate::model::simd::portable_pool;

/// A batch of random pairs: first images, second images, same-class flags.
struct Batch {
    first: Tensor,
    second: Tensor,
    same: Vec<f32>,
}

impl Batch {
    fn new(spec: ModelSpec, pairs: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Batch {
            first: images(&mut rng, spec, pairs),
            second: images(&mut rng, spec, pairs),
            same: (0..pairs).map(|_| (rng.next_u64() % 2) as f32).collect(),
        }
    }

    /// The gradient of one backward call over `pairs`, stacked as the replica stacks them.
    fn gradient(&self, net: &Network, pairs: Range<usize>, per: usize) -> Vec<f32> {
        let (start, len) = (pairs.start, pairs.len());
        let x = Tensor::cat(
            &[
                self.first.narrow(0, start, len).unwrap(),
                self.second.narrow(0, start, len).unwrap(),
            ],
            0,
        )
        .unwrap();
        let y = Tensor::from_slice(&self.same[pairs], len, &Device::Cpu).unwrap();
        net.pair_step(&x, &y, per).unwrap().grad
    }
}

/// Asserts `got` has the bits of `want`, naming the first parameter entry that differs.
fn assert_same_bits(spec: ModelSpec, want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: gradient lengths");
    for p in spec.params() {
        let (w, g) = (&want[p.offset..][..p.len()], &got[p.offset..][..p.len()]);
        if let Some(i) = (0..p.len()).find(|&i| w[i].to_bits() != g[i].to_bits()) {
            assert_eq!(
                g[i].to_bits(),
                w[i].to_bits(),
                "{what}: {}[{i}] is {:e} where {:e} was expected",
                p.name,
                g[i],
                w[i]
            );
        }
    }
}

/// For every balanced split of the micro-batches among 1..=8 workers: each worker's canonical
/// blocks, one backward call each, combined by the coordinator's tree, against the whole batch
/// in one call. Returns whether adding the workers' blocks left to right would have differed
/// somewhere (so the test can tell the tree from a plain sum).
fn splits_combine_to_the_whole(spec: ModelSpec, pairs: usize, per: usize) -> bool {
    let net = Network::new(spec, &spec.init(9), &Device::Cpu).unwrap();
    let batch = Batch::new(spec, pairs, 21 + pairs as u64);
    let micro = MicroBatches::new(pairs, per).unwrap();
    let total = micro.leaves();
    let whole = batch.gradient(&net, 0..pairs, per);
    let mut plain_sum_differs = false;
    for workers in 1..=total.min(8) {
        let parts: Vec<(Range<usize>, Vec<f32>)> = balanced(total, workers)
            .into_iter()
            .flat_map(|run| blocks(run, total))
            .map(|b| {
                let g = batch.gradient(&net, micro.pair_range(b.clone()), per);
                (b, g)
            })
            .collect();
        let got = combine(total, parts.clone()).unwrap();
        let what = format!(
            "{pairs} pairs of {spec:?}, {workers} workers, blocks {parts_at:?}",
            parts_at = parts.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>()
        );
        assert_same_bits(spec, &whole, &got, &what);
        let plain = parts
            .iter()
            .skip(1)
            .fold(parts[0].1.clone(), |mut acc, (_, g)| {
                acc.iter_mut().zip(g).for_each(|(a, b)| *a += b);
                acc
            });
        plain_sum_differs |= plain
            .iter()
            .zip(&whole)
            .any(|(a, b)| a.to_bits() != b.to_bits());
    }
    plain_sum_differs
}

#[test]
fn mnist_gradient_is_the_same_for_every_split() {
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let mut differs = splits_combine_to_the_whole(spec, 64, 8);
    // The last micro-batch holds 4 pairs.
    differs |= splits_combine_to_the_whole(spec, 60, 8);
    assert!(
        differs,
        "no split would have differed: the test proves nothing"
    );
}

#[test]
fn cifar_gradient_is_the_same_for_every_split() {
    let spec = ModelSpec::siamese(DatasetKind::Cifar10, 10);
    let mut differs = splits_combine_to_the_whole(spec, 64, 8);
    differs |= splits_combine_to_the_whole(spec, 60, 8);
    assert!(
        differs,
        "no split would have differed: the test proves nothing"
    );
}

#[test]
fn portable_kernels_give_the_same_gradient_for_every_split() {
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    portable_pool(2).install(|| splits_combine_to_the_whole(spec, 60, 8));
}

/// The default path is the fastest this CPU has (AVX-512 here); AVX2 must hold as well.
#[test]
fn every_simd_path_gives_the_same_gradient_for_every_split() {
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    for path in simd_paths() {
        forced_pool(path, 2).install(|| splits_combine_to_the_whole(spec, 60, 8));
    }
}

/// The portable kernels and every SIMD path this CPU has give one gradient, bit for bit, so
/// that workers on CPUs with and without AVX2 (or AVX-512) train the same model.
#[test]
fn every_kernel_path_gives_the_same_gradient_bits() {
    use crate::model::kernel_path::on_every_path;
    for kind in [DatasetKind::Mnist, DatasetKind::Cifar10] {
        let spec = ModelSpec::siamese(kind, 10);
        let net = Network::new(spec, &spec.init(6), &Device::Cpu).unwrap();
        let batch = Batch::new(spec, 20, 13);
        let runs = on_every_path(|| batch.gradient(&net, 0..20, 8));
        assert!(runs.len() > 1, "this CPU has no SIMD path to compare");
        let (_, portable) = &runs[0];
        for (path, got) in &runs[1..] {
            assert_same_bits(spec, portable, got, &format!("{kind:?} on {path:?}"));
        }
    }
}

/// The whole batch's gradient inside rayon pools of 1, 2 and 3 threads.
fn same_for_every_thread_count(spec: ModelSpec, portable: bool) {
    let net = Network::new(spec, &spec.init(4), &Device::Cpu).unwrap();
    let batch = Batch::new(spec, 60, 8);
    let run = |threads: usize| {
        let pool = if portable {
            portable_pool(threads)
        } else {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        };
        pool.install(|| batch.gradient(&net, 0..60, 8))
    };
    let one = run(1);
    for threads in [2, 3] {
        let what = format!("{spec:?} on {threads} threads (portable: {portable})");
        assert_same_bits(spec, &one, &run(threads), &what);
    }
}

#[test]
fn gradient_does_not_depend_on_the_thread_count() {
    same_for_every_thread_count(ModelSpec::siamese(DatasetKind::Mnist, 10), false);
    same_for_every_thread_count(ModelSpec::siamese(DatasetKind::Cifar10, 10), false);
    same_for_every_thread_count(ModelSpec::siamese(DatasetKind::Mnist, 10), true);
}

#[test]
fn batches_that_are_not_a_multiple_of_the_micro_batch_work() {
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let net = Network::new(spec, &spec.init(2), &Device::Cpu).unwrap();
    let batch = Batch::new(spec, 13, 5);
    // 13 pairs: leaves of 8 and 5 pairs, sent as two blocks.
    let whole = batch.gradient(&net, 0..13, 8);
    let (first, second) = (
        batch.gradient(&net, 0..8, 8),
        batch.gradient(&net, 8..13, 8),
    );
    let got = combine(2, vec![(1..2, second), (0..1, first)]).unwrap();
    assert_same_bits(spec, &whole, &got, "13 pairs as 8 + 5");
    // One micro-batch larger than the batch, and one pair a micro-batch: the same sum to
    // rounding.
    let wide = batch.gradient(&net, 0..13, 32);
    let narrow = batch.gradient(&net, 0..13, 1);
    let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for other in [&wide, &narrow] {
        let diff = whole
            .iter()
            .zip(other)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-5 * scale, "{diff:e} against {scale:e}");
    }
}

#[test]
fn pair_step_names_a_bad_micro_batch_or_a_short_batch() {
    let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
    let net = Network::new(spec, &spec.init(2), &Device::Cpu).unwrap();
    let batch = Batch::new(spec, 3, 5);
    let x = Tensor::cat(&[&batch.first, &batch.second], 0).unwrap();
    let y = Tensor::from_slice(&batch.same, 3, &Device::Cpu).unwrap();
    let err = net.pair_step(&x, &y, 0).unwrap_err().to_string();
    assert!(err.contains("micro-batch"), "{err}");
    let err = net.pair_step(&batch.first, &y, 8).unwrap_err().to_string();
    assert!(err.contains("3 images for 3 pairs"), "{err}");
}
