//! Optimisers over flat parameter vectors.

pub mod adam;

pub use adam::{Adam, AdamConfig};
