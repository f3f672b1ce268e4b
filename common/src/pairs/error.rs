//! What can be wrong with the inputs of a split or a pair draw.

use thiserror::Error;

/// Why a split or a pair list could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PairError {
    /// The pool of images to pair is empty.
    #[error("the image pool is empty: there is nothing to pair")]
    EmptyPool,
    /// A pool entry points past the end of the label list.
    #[error("pool index {index} is out of range for {len} labels")]
    IndexOutOfRange {
        /// The offending image index.
        index: u32,
        /// Number of labels available.
        len: usize,
    },
    /// An image appears twice in the pool (it could then be paired with itself).
    #[error("image {index} appears more than once in the pool")]
    DuplicateIndex {
        /// The repeated image index.
        index: u32,
    },
    /// A label outside 0..=9.
    #[error("image {index} has label {label}; labels must be 0..=9")]
    LabelOutOfRange {
        /// The image carrying the label.
        index: u32,
        /// The offending label.
        label: u8,
    },
    /// Fewer than two classes, so no different-class pair exists.
    #[error("the pool holds images of {found} class(es); different-class pairs need at least 2")]
    TooFewClasses {
        /// Number of classes present in the pool.
        found: usize,
    },
    /// A class with one image cannot give its anchor a same-class partner.
    #[error("class {class} has only {count} image in the pool; same-class pairs need at least 2")]
    ClassTooSmall {
        /// The class in question.
        class: u8,
        /// Its number of images in the pool.
        count: usize,
    },
    /// More images than a `u32` index can address.
    #[error("{n} images cannot be indexed with u32")]
    TooManyImages {
        /// The requested number of images.
        n: usize,
    },
    /// The split asks for more images than exist.
    #[error("split of {n_train} train + {n_val} validation images exceeds the {n_total} available")]
    SplitTooLarge {
        /// Requested training images.
        n_train: usize,
        /// Requested validation images.
        n_val: usize,
        /// Images available.
        n_total: usize,
    },
    /// The epoch number whose stream is reserved for validation pairs.
    #[error("epoch {epoch} is reserved for the validation-pair stream")]
    ReservedEpoch {
        /// The rejected epoch.
        epoch: u64,
    },
}
