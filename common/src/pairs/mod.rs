//! The pair protocol: which images are paired, in which order, for training, validation and test.
//!
//! Every list depends only on its inputs (labels, pool, seed, epoch), never on the number of
//! workers, so N workers train on exactly the batches one process would (docs/spec.md, the pair protocol).

mod batches;
mod class_index;
mod error;
mod rng;
mod split;

#[cfg(test)]
mod tests;

pub use batches::{batches, shard_ranges};
pub use class_index::{ClassIndex, NUM_CLASSES};
pub use error::PairError;
pub use rng::PairRng;
pub use split::{SPLIT_SEED, Split, split};

use serde::{Deserialize, Serialize};

/// Seed of the test pairs: fixed so every run is scored on the same 10,000 pairs.
pub const TEST_SEED: u64 = 0x7E57_5EED_0000_0001;

/// Stream of the validation pairs; training epoch `e` uses stream `e`, so this one is reserved.
pub const VALIDATION_STREAM: u64 = u64::MAX;

/// Two images (indices into one image set) and whether they share a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The anchor image.
    pub a: u32,
    /// Its partner.
    pub b: u32,
    /// True for a same-class pair (target y = 1).
    pub same: bool,
}

/// The training pairs of one epoch: one per pool image, even positions same-class.
pub fn training_pairs(
    labels: &[u8],
    pool: &[u32],
    seed: u64,
    epoch: u64,
) -> Result<Vec<Pair>, PairError> {
    if epoch == VALIDATION_STREAM {
        return Err(PairError::ReservedEpoch { epoch });
    }
    draw_pairs(labels, pool, &mut PairRng::new(seed, epoch))
}

/// The validation pairs of a run, drawn once from a stream no training epoch uses.
pub fn validation_pairs(labels: &[u8], pool: &[u32], seed: u64) -> Result<Vec<Pair>, PairError> {
    draw_pairs(labels, pool, &mut PairRng::new(seed, VALIDATION_STREAM))
}

/// The fixed test pairs: every test image anchors once, half the pairs same-class.
pub fn test_pairs(labels: &[u8]) -> Result<Vec<Pair>, PairError> {
    let n =
        u32::try_from(labels.len()).map_err(|_| PairError::TooManyImages { n: labels.len() })?;
    let pool: Vec<u32> = (0..n).collect();
    draw_pairs(labels, &pool, &mut PairRng::new(TEST_SEED, 0))
}

/// The shared procedure: shuffle the anchors, then alternate same-class and different-class.
///
/// Alternating (rather than shuffling a half/half mask) makes every even-length prefix and
/// every even-sized aligned batch exactly balanced, and a prefix of the list a fair subset.
fn draw_pairs(labels: &[u8], pool: &[u32], rng: &mut PairRng) -> Result<Vec<Pair>, PairError> {
    let index = ClassIndex::new(labels, pool)?;
    index.check_pairable()?;
    let mut anchors = pool.to_vec();
    rng.shuffle(&mut anchors);
    let present = index.present();
    let pairs = anchors
        .iter()
        .enumerate()
        .map(|(k, &a)| {
            // Labels were validated by ClassIndex::new for every pool image.
            let class = labels[a as usize];
            let same = k % 2 == 0;
            let b = if same {
                other_than(index.class(class), a, rng)
            } else {
                let other = other_than(present, class, rng);
                let list = index.class(other);
                list[rng.below(list.len())]
            };
            Pair { a, b, same }
        })
        .collect();
    Ok(pairs)
}

/// Uniform element of `list` other than `skip`, which must occur in `list` exactly once.
///
/// Draws among the first `len - 1` slots and maps a hit on `skip` to the last slot, the one
/// slot not otherwise reachable: one draw, uniform, no position lookup needed.
fn other_than<T: Copy + PartialEq>(list: &[T], skip: T, rng: &mut PairRng) -> T {
    let last = list.len() - 1;
    let pick = list[rng.below(last)];
    if pick == skip { list[last] } else { pick }
}
