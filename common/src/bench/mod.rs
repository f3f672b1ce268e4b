//! Benchmarks that print the figures users compare trainers by: scaling efficiency of the real
//! cluster, and the paper's test-time table. Speed is measured here, never asserted in tests.

pub mod plot;
pub mod scaling;
pub mod stats;
pub mod test_time;

pub use scaling::{ScalingArgs, ScalingMode, ScalingReport, ScalingRun, run_scaling};
pub use stats::Spread;
pub use test_time::{TestTimeArgs, TestTimeReport, run_test_time};
