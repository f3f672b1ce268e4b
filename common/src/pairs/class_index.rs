//! Per-class lists of the images in a pool, built once per draw so partner lookup is O(1).

use super::PairError;

/// Number of classes in every supported dataset (MNIST, Fashion-MNIST, CIFAR-10).
pub const NUM_CLASSES: usize = 10;

/// Image indices of a pool grouped by class label.
#[derive(Clone, Debug)]
pub struct ClassIndex {
    by_class: [Vec<u32>; NUM_CLASSES],
    present: Vec<u8>,
}

impl ClassIndex {
    /// Groups `pool` (indices into `labels`) by label, checking every index and label.
    pub fn new(labels: &[u8], pool: &[u32]) -> Result<Self, PairError> {
        if pool.is_empty() {
            return Err(PairError::EmptyPool);
        }
        let mut by_class: [Vec<u32>; NUM_CLASSES] = Default::default();
        // A duplicate would let an image be its own "other same-class image".
        let mut seen = vec![false; labels.len()];
        for &index in pool {
            let i = index as usize;
            let label = *labels.get(i).ok_or(PairError::IndexOutOfRange {
                index,
                len: labels.len(),
            })?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(PairError::DuplicateIndex { index });
            }
            let list = by_class
                .get_mut(label as usize)
                .ok_or(PairError::LabelOutOfRange { index, label })?;
            list.push(index);
        }
        let present = (0..NUM_CLASSES as u8)
            .filter(|&c| !by_class[c as usize].is_empty())
            .collect();
        Ok(Self { by_class, present })
    }

    /// Images of class `class` in the pool (empty for absent or out-of-range classes).
    pub fn class(&self, class: u8) -> &[u32] {
        self.by_class.get(class as usize).map_or(&[], Vec::as_slice)
    }

    /// Classes with at least one image in the pool, ascending.
    pub fn present(&self) -> &[u8] {
        &self.present
    }

    /// Checks that every anchor can get both kinds of partner.
    ///
    /// Checked for every class up front, not only for the anchors that happen to be drawn,
    /// so whether a pool is usable never depends on the seed or the epoch.
    pub fn check_pairable(&self) -> Result<(), PairError> {
        if self.present.len() < 2 {
            return Err(PairError::TooFewClasses {
                found: self.present.len(),
            });
        }
        for &class in &self.present {
            let count = self.class(class).len();
            if count < 2 {
                return Err(PairError::ClassTooSmall { class, count });
            }
        }
        Ok(())
    }
}
