//! Optimisers over flat parameter vectors.

pub mod adam;
pub mod schedule;

pub use adam::{Adam, AdamConfig};
pub use schedule::LrSchedule;
