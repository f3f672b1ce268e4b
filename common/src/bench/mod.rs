//! Benchmarks that print the figures users compare trainers by: scaling efficiency of the real
//! cluster (and, later, the paper's tables). Speed is measured here, never asserted in tests.

pub mod plot;
pub mod scaling;
pub mod stats;

pub use scaling::{ScalingArgs, ScalingMode, ScalingReport, ScalingRun, run_scaling};
pub use stats::Spread;
