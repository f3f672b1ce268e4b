//! Why a gradient cannot be summed or applied.

/// Why a gradient cannot be summed or applied; the step is not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregationError {
    /// A value is NaN or infinite.
    #[error("value {index} is {value}")]
    NonFinite {
        /// Its position in the flat vector.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The vector does not have the model's length.
    #[error("it has {got} values, the model has {want}")]
    WrongLength {
        /// Its length.
        got: usize,
        /// The model's parameter count.
        want: usize,
    },
}
