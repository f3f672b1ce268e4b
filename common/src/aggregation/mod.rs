//! Summing gradients in an order fixed by the batch alone, so any split gives the same bytes.
pub mod tree;
