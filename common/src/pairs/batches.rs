//! Cutting a pair list into global batches and a global batch into worker shards.

use std::ops::Range;

use super::Pair;

/// Consecutive batches of `batch` pairs; the last one may be shorter, nothing is dropped.
///
/// # Panics
/// If `batch == 0`.
pub fn batches(pairs: &[Pair], batch: usize) -> impl Iterator<Item = &[Pair]> {
    assert!(batch > 0, "batch size must be at least 1");
    pairs.chunks(batch)
}

/// Splits `0..batch_len` into `workers` contiguous ranges whose lengths differ by at most 1.
///
/// Earlier shards get the extra pair. With more workers than pairs the trailing shards are
/// empty, so the coordinator must weight gradients by shard length (docs/spec.md, data-parallel training).
///
/// # Panics
/// If `workers == 0`.
pub fn shard_ranges(batch_len: usize, workers: usize) -> Vec<Range<usize>> {
    assert!(
        workers > 0,
        "at least one worker is needed to shard a batch"
    );
    let base = batch_len / workers;
    let extra = batch_len % workers;
    let mut start = 0;
    (0..workers)
        .map(|w| {
            let len = base + usize::from(w < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: u32) -> Vec<Pair> {
        (0..n)
            .map(|a| Pair {
                a,
                b: a + 1,
                same: a % 2 == 0,
            })
            .collect()
    }

    #[test]
    fn batches_drop_nothing() {
        let ps = pairs(10);
        let sizes: Vec<usize> = batches(&ps, 4).map(<[Pair]>::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let flat: Vec<Pair> = batches(&ps, 4).flatten().copied().collect();
        assert_eq!(flat, ps);
        assert_eq!(batches(&ps, 5).count(), 2);
        assert_eq!(batches(&[], 3).count(), 0);
    }

    #[test]
    fn shards_cover_and_balance() {
        for batch_len in 0..70 {
            for workers in 1..10 {
                let r = shard_ranges(batch_len, workers);
                assert_eq!(r.len(), workers);
                assert_eq!(r[0].start, 0);
                assert_eq!(r[workers - 1].end, batch_len);
                for w in r.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    // Non-increasing lengths: earlier shards get the extra.
                    assert!(w[0].len() >= w[1].len());
                }
                let (min, max) = (r[workers - 1].len(), r[0].len());
                assert!(max - min <= 1, "{batch_len} {workers} {r:?}");
                assert_eq!(r.iter().map(Range::len).sum::<usize>(), batch_len);
            }
        }
        assert_eq!(shard_ranges(64, 3), [0..22, 22..43, 43..64]);
        assert_eq!(shard_ranges(2, 4), [0..1, 1..2, 2..2, 2..2]);
    }
}
