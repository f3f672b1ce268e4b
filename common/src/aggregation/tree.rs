//! The one summation tree over micro-batches that makes a batch's gradient independent of how
//! the batch is split among workers and threads.
//!
//! A batch of pairs is cut into micro-batches of `per` pairs (the last may be shorter), the
//! leaves. The kernels sum each leaf's samples in f64 and round once to f32; the leaves are then
//! added in f32 by one binary tree over aligned ranges: the node covering
//! `[i 2^L, (i+1) 2^L) ∩ [0, M)` is left + right when its right half is non-empty, else its left
//! half. f32 addition is not associative, so it is this tree, never the split, that fixes the
//! order: a worker computes whole nodes (the canonical [`blocks`] of its share) in one backward
//! call each, and the coordinator adds them with the same rule in [`combine`].

use std::ops::Range;

use crate::model::kernel_path::lane_kernel;

/// Pairs per micro-batch when a run does not choose.
pub const DEFAULT_MICRO_BATCH: usize = 8;

/// Pairs one backward call takes at most (one micro-batch when a micro-batch holds more): a
/// larger share of a batch is cut into several blocks, which the tree adds into the same bits.
/// It bounds a replica's memory, which otherwise grows with the batch (952 MiB at 16,384 pairs),
/// and the time a worker spends in one task without answering keepalive PINGs (a 32,768-pair task
/// took 9 s and lost its worker).
pub const BLOCK_PAIRS_AT_MOST: usize = 128;

/// Why a set of tree nodes cannot be summed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// `per` was zero.
    #[error("a micro-batch must hold at least one pair, not 0")]
    ZeroPerMicroBatch,
    /// There were no leaves at all.
    #[error("there is nothing to sum: the batch has no micro-batches")]
    Empty,
    /// Some leaves were covered by no block.
    #[error("no block covers micro-batches {missing:?} of the batch")]
    Missing {
        /// The uncovered leaves.
        missing: Range<usize>,
    },
    /// Two blocks share leaves.
    #[error("blocks {first:?} and {second:?} overlap")]
    Overlap {
        /// The block that starts first.
        first: Range<usize>,
        /// The block that starts inside it.
        second: Range<usize>,
    },
    /// A block reaches past the batch's leaves.
    #[error("block {block:?} reaches past the batch's {total} micro-batches")]
    OutOfRange {
        /// The block.
        block: Range<usize>,
        /// Leaves in the batch.
        total: usize,
    },
    /// A block is not a node of the tree, so its sum was taken in another order.
    #[error(
        "block {block:?} is not a node of the summation tree over {total} micro-batches \
         (a worker must send the canonical blocks of its share)"
    )]
    NotCanonical {
        /// The block.
        block: Range<usize>,
        /// Leaves in the batch.
        total: usize,
    },
    /// Two blocks hold vectors of different lengths.
    #[error("block {block:?} holds {got} values, but block {first:?} holds {want}")]
    LengthMismatch {
        /// The block with the odd length.
        block: Range<usize>,
        /// Its length.
        got: usize,
        /// The block whose length the others are held to.
        first: Range<usize>,
        /// That length.
        want: usize,
    },
}

/// A batch of `pairs` pairs cut into micro-batches of `per` (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroBatches {
    pairs: usize,
    per: usize,
}

impl MicroBatches {
    /// Micro-batches of `per` pairs over a batch of `pairs`; `per` must be at least 1.
    pub fn new(pairs: usize, per: usize) -> Result<Self, TreeError> {
        if per == 0 {
            return Err(TreeError::ZeroPerMicroBatch);
        }
        Ok(MicroBatches { pairs, per })
    }

    /// [`MicroBatches::new`], or the whole batch as one micro-batch when `per` is 0.
    pub fn or_whole(pairs: usize, per: usize) -> Self {
        Self::new(pairs, per).unwrap_or_else(|_| Self::whole(pairs))
    }

    /// The whole batch as one micro-batch, for passes whose gradient no split has to match.
    pub fn whole(pairs: usize) -> Self {
        MicroBatches {
            pairs,
            per: pairs.max(1),
        }
    }

    /// Pairs in the batch.
    pub fn pairs(self) -> usize {
        self.pairs
    }

    /// Pairs per micro-batch (the last may hold fewer).
    pub fn per(self) -> usize {
        self.per
    }

    /// Number of micro-batches, the tree's leaves.
    pub fn leaves(self) -> usize {
        self.pairs.div_ceil(self.per)
    }

    /// The pairs of a range of micro-batches.
    pub fn pair_range(self, leaves: Range<usize>) -> Range<usize> {
        (leaves.start * self.per).min(self.pairs)..(leaves.end * self.per).min(self.pairs)
    }

    /// The canonical blocks that cover the micro-batches `leaves`, none of more than
    /// [`BLOCK_PAIRS_AT_MOST`] pairs unless one micro-batch holds more.
    pub fn bounded_blocks(self, leaves: Range<usize>) -> Vec<Range<usize>> {
        let most = (BLOCK_PAIRS_AT_MOST / self.per).max(1);
        blocks_at_most(leaves, self.leaves(), most)
    }
}

/// The canonical blocks (tree nodes) that cover `range` of a batch of `total` leaves: from each
/// start, the largest aligned node that fits. Leaves past `total` are ignored.
pub fn blocks(range: Range<usize>, total: usize) -> Vec<Range<usize>> {
    blocks_at_most(range, total, usize::MAX)
}

/// [`blocks`], none of more than `most` leaves (at least one): a node too large is cut into its
/// aligned sub-nodes, which the tree adds back into the same value, so the sum's bits do not
/// move.
pub fn blocks_at_most(range: Range<usize>, total: usize, most: usize) -> Vec<Range<usize>> {
    let end = range.end.min(total);
    let mut out = Vec::new();
    let mut start = range.start;
    while start < end {
        // A node of `size` from `start` ends at `total` when the batch cuts it short.
        let fits = |size: usize| {
            let stop = (start + size).min(total);
            stop <= end && stop - start <= most
        };
        let mut size = 1usize;
        // Past `total` a bigger node covers the same leaves, so growth stops there.
        while size < total && start.is_multiple_of(2 * size) && fits(2 * size) {
            size *= 2;
        }
        let stop = (start + size).min(total);
        out.push(start..stop);
        start = stop;
    }
    out
}

/// Whether `block` is a node of the tree over `total` leaves: `[s, min(s + 2^L, total))` with
/// `s` a multiple of `2^L`.
pub fn is_block(block: &Range<usize>, total: usize) -> bool {
    if block.start >= block.end || block.end > total {
        return false;
    }
    let size = block.len().next_power_of_two();
    // A node shorter than its power of two is one the end of the batch cut short.
    block.start.is_multiple_of(size) && (block.len() == size || block.end == total)
}

/// The tree rule, the one implementation behind [`sum_leaves`] and [`combine`].
///
/// Leaves the value of `node` under its first leaf. `held(r)` says whether the value of node `r`
/// is already at hand (under `r.start`); `add(l, r)` adds the value under `r` into the one under
/// `l`. A node of more than one leaf splits at its largest power-of-two half; its right part is
/// never empty, which is the rule's "left alone when the right child is empty" applied all the
/// way down.
fn reduce(
    node: Range<usize>,
    held: &impl Fn(&Range<usize>) -> bool,
    add: &mut impl FnMut(usize, usize),
) -> Result<(), TreeError> {
    if held(&node) {
        return Ok(());
    }
    if node.len() <= 1 {
        return Err(TreeError::Missing { missing: node });
    }
    let mid = node.start + node.len().next_power_of_two() / 2;
    reduce(node.start..mid, held, add)?;
    reduce(mid..node.end, held, add)?;
    add(node.start, mid);
    Ok(())
}

lane_kernel! {
    /// Elementwise `left += right` in f32: each sum is one IEEE addition, so the vector width the
    /// CPU offers changes the speed, never the bits.
    fn add_into(left: &mut [f32], right: &[f32]) -> () = add_lanes
}

#[inline(always)]
fn add_lanes(left: &mut [f32], right: &[f32]) {
    for (l, r) in left.iter_mut().zip(right) {
        *l += *r;
    }
}

/// Tree sum of the leaves stored back to back in `buf`, `width` values each; the root is left in
/// the first `width` values and returned (empty when there are no leaves).
pub fn sum_leaves(buf: &mut [f32], width: usize) -> &[f32] {
    let leaves = buf.len().checked_div(width).unwrap_or(0);
    if leaves == 0 {
        return &buf[..0];
    }
    let done = reduce(0..leaves, &|r| r.len() == 1, &mut |l, r| {
        let (head, tail) = buf.split_at_mut(r * width);
        add_into(&mut head[l * width..][..width], &tail[..width]);
    });
    debug_assert!(done.is_ok(), "every single leaf is held");
    &buf[..width]
}

/// The root of the tree over `total` leaves from the values of canonical blocks that partition
/// `0..total`, received in any order: what the coordinator does with its workers' gradients.
/// The parts are taken, not borrowed: the sums are made in their buffers, with no copy.
pub fn combine(total: usize, parts: Vec<(Range<usize>, Vec<f32>)>) -> Result<Vec<f32>, TreeError> {
    if total == 0 {
        return Err(TreeError::Empty);
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| (parts[i].0.start, parts[i].0.end));
    let Some(&first) = order.first() else {
        return Err(TreeError::Missing { missing: 0..total });
    };
    let (first_range, want) = (parts[first].0.clone(), parts[first].1.len());
    let mut ends = vec![None; total];
    let mut covered: Option<&Range<usize>> = None;
    for &i in &order {
        let (block, values) = (&parts[i].0, &parts[i].1);
        if block.end > total {
            return Err(TreeError::OutOfRange {
                block: block.clone(),
                total,
            });
        }
        if !is_block(block, total) {
            return Err(TreeError::NotCanonical {
                block: block.clone(),
                total,
            });
        }
        if values.len() != want {
            return Err(TreeError::LengthMismatch {
                block: block.clone(),
                got: values.len(),
                first: first_range,
                want,
            });
        }
        let next = covered.map_or(0, |c| c.end);
        if block.start > next {
            return Err(TreeError::Missing {
                missing: next..block.start,
            });
        }
        if let Some(prev) = covered.filter(|c| block.start < c.end) {
            return Err(TreeError::Overlap {
                first: prev.clone(),
                second: block.clone(),
            });
        }
        ends[block.start] = Some(block.end);
        covered = Some(block);
    }
    let end = covered.map_or(0, |c| c.end);
    if end < total {
        return Err(TreeError::Missing {
            missing: end..total,
        });
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; total];
    for (block, values) in parts {
        slots[block.start] = Some(values);
    }
    reduce(0..total, &|r| ends[r.start] == Some(r.end), &mut |l, r| {
        if let (Some(right), Some(left)) = (slots[r].take(), slots[l].as_mut()) {
            add_into(left, &right);
        }
    })?;
    slots[0]
        .take()
        .ok_or(TreeError::Missing { missing: 0..total })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};

    /// `total` leaves in `workers` contiguous runs whose lengths differ by at most one, earlier
    /// runs longer: how the cluster shards a batch.
    pub(crate) fn balanced(total: usize, workers: usize) -> Vec<Range<usize>> {
        let (base, extra) = (total / workers, total % workers);
        let mut start = 0;
        (0..workers)
            .map(|w| {
                let len = base + usize::from(w < extra);
                start += len;
                start - len..start
            })
            .collect()
    }

    /// Leaf values whose f32 sums depend on the order: magnitudes 1e8, 1 and 1e-8, both signs.
    fn leaves(rng: &mut ChaCha8Rng, total: usize, width: usize) -> Vec<f32> {
        let scales = [1e8f32, 3.0e7, 1.0, 0.75, 1e-8];
        (0..total * width)
            .map(|_| {
                let r = rng.next_u64();
                let scale = scales[(r % scales.len() as u64) as usize];
                let sign = if r & (1 << 32) != 0 { -1.0 } else { 1.0 };
                sign * scale * (1.0 + (r >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The canonical blocks of at most `most` leaves of each worker's run, each summed on its
    /// own as one backward call would, then combined; `reverse` delivers them in the opposite
    /// order.
    fn combined(
        values: &[f32],
        width: usize,
        runs: &[Range<usize>],
        reverse: bool,
        most: usize,
    ) -> Vec<f32> {
        let total = values.len() / width;
        let mut sums: Vec<(Range<usize>, Vec<f32>)> = runs
            .iter()
            .flat_map(|r| blocks_at_most(r.clone(), total, most))
            .map(|b| {
                let mut own = values[b.start * width..b.end * width].to_vec();
                let root = sum_leaves(&mut own, width).to_vec();
                (b, root)
            })
            .collect();
        if reverse {
            sums.reverse();
        }
        combine(total, sums).expect("a partition into canonical blocks")
    }

    #[test]
    fn blocks_are_canonical_cover_their_range_and_are_few() {
        for total in 1..=70 {
            for start in 0..total {
                for end in start + 1..=total {
                    let b = blocks(start..end, total);
                    assert_eq!(b.first().map(|r| r.start), Some(start));
                    assert_eq!(b.last().map(|r| r.end), Some(end));
                    for w in b.windows(2) {
                        assert_eq!(w[0].end, w[1].start, "{start}..{end} of {total}: {b:?}");
                    }
                    assert!(b.iter().all(|r| is_block(r, total)), "{b:?} of {total}");
                    let log = (usize::BITS - (total - 1).leading_zeros()) as usize;
                    assert!(
                        b.len() <= 2 * log.max(1),
                        "{start}..{end} of {total}: {b:?}"
                    );
                }
            }
        }
        assert_eq!(blocks(0..8, 8).len(), 1);
        assert_eq!(blocks(0..8, 8)[0], 0..8);
        assert_eq!(blocks(3..8, 8), [3..4, 4..8]);
        assert_eq!(blocks(4..5, 5), vec![4..5; 1]);
        assert_eq!(blocks(0..5, 5), vec![0..5; 1]);
        assert_eq!(blocks(2..7, 7), [2..4, 4..7]);
    }

    #[test]
    fn blocks_at_most_stay_canonical_and_within_their_limit() {
        for total in 1..=40 {
            for start in 0..total {
                for end in start + 1..=total {
                    for most in 0..=9 {
                        let b = blocks_at_most(start..end, total, most);
                        let joined: Vec<usize> = b.iter().flat_map(Clone::clone).collect();
                        assert_eq!(joined, (start..end).collect::<Vec<_>>(), "{b:?}");
                        assert!(b.iter().all(|r| is_block(r, total)), "{b:?} of {total}");
                        assert!(
                            b.iter().all(|r| r.len() <= most.max(1)),
                            "{b:?} most {most}"
                        );
                    }
                    assert_eq!(
                        blocks_at_most(start..end, total, total),
                        blocks(start..end, total)
                    );
                }
            }
        }
        assert_eq!(blocks_at_most(0..8, 8, 4), [0..4, 4..8]);
        assert_eq!(blocks_at_most(0..5, 5, 3), [0..2, 2..4, 4..5]);
    }

    #[test]
    fn is_block_knows_the_tree_nodes() {
        assert!(is_block(&(0..5), 5) && is_block(&(4..5), 5) && is_block(&(4..6), 6));
        assert!(!is_block(&(1..3), 4) && !is_block(&(0..3), 4) && !is_block(&(2..2), 4));
        assert!(!is_block(&(0..4), 3) && !is_block(&(4..7), 8));
    }

    #[test]
    fn any_partition_combines_to_the_bytes_of_the_whole_tree() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let width = 3;
        let mut order_mattered = false;
        for total in 1..=20 {
            let values = leaves(&mut rng, total, width);
            let mut all = values.clone();
            let whole = bits(sum_leaves(&mut all, width));
            let naive: Vec<f32> = (0..width)
                .map(|j| (0..total).map(|k| values[k * width + j]).sum())
                .collect();
            order_mattered |= bits(&naive) != whole;
            let mut partitions: Vec<Vec<Range<usize>>> =
                (1..=total).map(|w| balanced(total, w)).collect();
            for _ in 0..30 {
                let mut cuts: Vec<usize> = (0..rng.next_u64() % 5)
                    .map(|_| (rng.next_u64() % total as u64) as usize)
                    .collect();
                cuts.extend([0, total]);
                cuts.sort_unstable();
                cuts.dedup();
                partitions.push(cuts.windows(2).map(|c| c[0]..c[1]).collect());
            }
            for runs in &partitions {
                for reverse in [false, true] {
                    for most in [usize::MAX, 1, 2, 3, 4] {
                        let got = combined(&values, width, runs, reverse, most);
                        assert_eq!(
                            bits(&got),
                            whole,
                            "{total} leaves split as {runs:?}, blocks of at most {most}"
                        );
                    }
                }
            }
        }
        assert!(
            order_mattered,
            "the leaf values do not test the order of the sums"
        );
    }

    #[test]
    fn bad_partitions_are_named() {
        let v: &[f32] = &[1.0, 2.0];
        let short: &[f32] = &[1.0];
        let err = |parts: &[(Range<usize>, &[f32])]| {
            let owned = parts.iter().map(|(b, v)| (b.clone(), v.to_vec())).collect();
            combine(8, owned).unwrap_err()
        };
        assert_eq!(
            err(&[(0..4, v), (6..8, v)]),
            TreeError::Missing { missing: 4..6 }
        );
        assert_eq!(err(&[(0..4, v)]), TreeError::Missing { missing: 4..8 });
        assert_eq!(err(&[(4..8, v)]), TreeError::Missing { missing: 0..4 });
        assert_eq!(err(&[]), TreeError::Missing { missing: 0..8 });
        assert_eq!(
            err(&[(0..4, v), (4..8, v), (4..6, v)]),
            TreeError::Overlap {
                first: 4..6,
                second: 4..8
            }
        );
        assert_eq!(
            err(&[(0..4, v), (0..4, v), (4..8, v)]),
            TreeError::Overlap {
                first: 0..4,
                second: 0..4
            }
        );
        assert_eq!(
            err(&[(0..3, v), (3..4, v), (4..8, v)]),
            TreeError::NotCanonical {
                block: 0..3,
                total: 8
            }
        );
        assert_eq!(
            err(&[(0..4, v), (4..8, short)]),
            TreeError::LengthMismatch {
                block: 4..8,
                got: 1,
                first: 0..4,
                want: 2
            }
        );
        assert_eq!(
            err(&[(0..8, v), (8..9, v)]),
            TreeError::OutOfRange {
                block: 8..9,
                total: 8
            }
        );
        assert_eq!(combine(0, Vec::new()), Err(TreeError::Empty));
        let msg = err(&[(0..3, v), (3..4, v), (4..8, v)]).to_string();
        assert!(msg.contains("0..3") && msg.contains("canonical"), "{msg}");
    }

    #[test]
    fn micro_batches_cut_the_batch() {
        let m = MicroBatches::new(60, 8).unwrap();
        assert_eq!((m.leaves(), m.pairs(), m.per()), (8, 60, 8));
        assert_eq!(m.pair_range(0..1), 0..8);
        assert_eq!(m.pair_range(4..8), 32..60);
        assert_eq!(m.pair_range(7..8), 56..60);
        assert_eq!(MicroBatches::new(0, 8).unwrap().leaves(), 0);
        assert_eq!(MicroBatches::new(3, 8).unwrap().leaves(), 1);
        assert_eq!(MicroBatches::whole(5).leaves(), 1);
        assert_eq!(MicroBatches::whole(0).leaves(), 0);
        assert_eq!(MicroBatches::new(4, 0), Err(TreeError::ZeroPerMicroBatch));
    }

    #[test]
    fn sum_leaves_follows_the_tree() {
        // Five leaves: ((l0 + l1) + (l2 + l3)) + l4.
        let mut buf = [1e8f32, 1.0, -1e8, 1.0, 1.0];
        let want = ((1e8f32 + 1.0) + (-1e8 + 1.0)) + 1.0;
        assert_eq!(sum_leaves(&mut buf, 1)[0].to_bits(), want.to_bits());
        assert!(sum_leaves(&mut [], 4).is_empty());
    }
}
