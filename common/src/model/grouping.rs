//! Which rows of a layer's batch each leaf of the gradient tree sums, and in what order.
//!
//! The image layers of the siamese net see a batch stacked as `[a_0..a_n, b_0..b_n]`, so the
//! pairs of one micro-batch are two runs of rows there; the similarity unit sees one row per
//! pair. Every kernel that sums over samples takes its leaves from here, so all of them agree on
//! the order.

use std::ops::Range;

use candle_core::Result;

use crate::aggregation::tree::MicroBatches;

/// How a batch's rows form the leaves of the gradient tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    micro: MicroBatches,
    /// Whether the rows are the pairs' first images, then their second images.
    stacked: bool,
}

impl Grouping {
    /// Rows are the images of pairs stacked as `[a_0..a_n, b_0..b_n]`: leaf `k` sums its pairs'
    /// first images in order, then their second images.
    pub fn stacked(micro: MicroBatches) -> Self {
        Grouping {
            micro,
            stacked: true,
        }
    }

    /// One row per sample (a pair at the similarity unit, an image in the classifier): leaf `k`
    /// sums its samples in order.
    pub fn flat(micro: MicroBatches) -> Self {
        Grouping {
            micro,
            stacked: false,
        }
    }

    /// The same micro-batches with one row per pair: the layers after the branches meet.
    pub fn per_pair(self) -> Self {
        Grouping::flat(self.micro)
    }

    /// Rows the layer's batch has.
    pub fn rows(self) -> usize {
        if self.stacked {
            2 * self.micro.pairs()
        } else {
            self.micro.pairs()
        }
    }

    /// Leaves of the tree.
    pub fn leaves(self) -> usize {
        self.micro.leaves()
    }

    /// The rows of leaf `k` as (at most) two runs, in summation order; the second run is empty
    /// unless the batch is stacked.
    pub fn runs(self, k: usize) -> [Range<usize>; 2] {
        let first = self.micro.pair_range(k..k + 1);
        if self.stacked {
            let n = self.micro.pairs();
            [first.clone(), first.start + n..first.end + n]
        } else {
            [first, 0..0]
        }
    }

    /// Cuts a per-row buffer (`row` values a row) into each leaf's two runs, for kernels that
    /// write per-row results leaf by leaf in parallel; an empty buffer gives empty runs.
    pub(crate) fn split_rows<T>(self, buf: &mut [T], row: usize) -> Vec<[&mut [T]; 2]> {
        let chunk = (self.micro.per() * row).max(1);
        let (first, second) = if self.stacked && !buf.is_empty() {
            buf.split_at_mut((self.micro.pairs() * row).min(buf.len()))
        } else {
            (buf, &mut [][..])
        };
        let (mut first, mut second) = (first.chunks_mut(chunk), second.chunks_mut(chunk));
        (0..self.leaves())
            .map(|_| {
                [
                    first.next().unwrap_or_default(),
                    second.next().unwrap_or_default(),
                ]
            })
            .collect()
    }

    /// Refuses a batch of `rows` rows that this grouping does not describe; `op` names the
    /// kernel in the error.
    pub(crate) fn check(self, rows: usize, op: &str) -> Result<()> {
        if rows != self.rows() {
            candle_core::bail!(
                "{op}: the batch has {rows} rows, but its micro-batches describe {} ({} pairs{})",
                self.rows(),
                self.micro.pairs(),
                if self.stacked {
                    ", two images each"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_leaves_take_first_then_second_images() {
        let g = Grouping::stacked(MicroBatches::new(10, 4).unwrap());
        assert_eq!((g.rows(), g.leaves()), (20, 3));
        assert_eq!(g.runs(0), [0..4, 10..14]);
        assert_eq!(g.runs(2), [8..10, 18..20]);
        assert_eq!(g.per_pair().runs(2), [8..10, 0..0]);
        let mut buf: Vec<u32> = (0..40).collect();
        let parts = g.split_rows(&mut buf, 2);
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[2][0][0], parts[2][0].len()), (16, 4));
        assert_eq!((parts[2][1][0], parts[2][1].len()), (36, 4));
        assert!(
            g.split_rows::<u32>(&mut [], 2)
                .iter()
                .all(|[a, b]| a.is_empty() && b.is_empty())
        );
        assert!(g.check(20, "op").is_ok());
        let err = g.check(21, "op").unwrap_err().to_string();
        assert!(err.contains("21 rows") && err.contains("10 pairs"), "{err}");
    }
}
