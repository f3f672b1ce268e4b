//! The fixed train/validation split of a training file.

use super::{PairError, PairRng};

/// Seed of the split permutation: fixed so every run and every worker count sees the same split.
pub const SPLIT_SEED: u64 = 0x5EED_5B11_7000_0001;

/// Image indices of the training and validation parts of a training file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Indices used for training.
    pub train: Vec<u32>,
    /// Indices held out for validation.
    pub val: Vec<u32>,
}

/// Splits `0..n_total` by a fixed seeded permutation: first `n_train` train, next `n_val` val.
pub fn split(n_total: usize, n_train: usize, n_val: usize) -> Result<Split, PairError> {
    if n_train.checked_add(n_val).is_none_or(|n| n > n_total) {
        return Err(PairError::SplitTooLarge {
            n_train,
            n_val,
            n_total,
        });
    }
    let n = u32::try_from(n_total).map_err(|_| PairError::TooManyImages { n: n_total })?;
    let mut perm: Vec<u32> = (0..n).collect();
    PairRng::new(SPLIT_SEED, 0).shuffle(&mut perm);
    let val = perm[n_train..n_train + n_val].to_vec();
    perm.truncate(n_train);
    Ok(Split { train: perm, val })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_and_covering() {
        let s = split(60_000, 48_000, 12_000).unwrap();
        assert_eq!((s.train.len(), s.val.len()), (48_000, 12_000));
        let mut all: Vec<u32> = s.train.iter().chain(&s.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..60_000).collect::<Vec<_>>());
        // Shuffled, not the identity prefix.
        assert_ne!(s.train[..100], (0..100).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn split_is_fixed_and_partial_split_is_allowed() {
        assert_eq!(
            split(1000, 600, 300).unwrap(),
            split(1000, 600, 300).unwrap()
        );
        let s = split(1000, 600, 300).unwrap();
        let mut seen = vec![false; 1000];
        for &i in s.train.iter().chain(&s.val) {
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        // Train is a prefix of the same permutation whatever n_val is.
        assert_eq!(split(1000, 600, 0).unwrap().train, s.train);
    }

    #[test]
    fn split_rejects_too_many() {
        assert_eq!(
            split(10, 8, 3),
            Err(PairError::SplitTooLarge {
                n_train: 8,
                n_val: 3,
                n_total: 10
            })
        );
        assert!(split(10, usize::MAX, 1).is_err());
        assert!(split(10, 7, 3).is_ok());
    }
}
