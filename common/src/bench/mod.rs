//! Benchmarks that print the figures users compare trainers by: scaling efficiency of the real
//! cluster, the paper's test-time table, and all the paper's tables and figures in one run. Speed is measured here, never asserted in tests.

pub mod pair_grid;
pub mod paper;
pub mod paper_report;
pub mod paper_spec;
pub mod plot;
pub mod scaling;
pub mod stats;
pub mod test_time;

pub use paper::{PaperArgs, run_paper};
pub use paper_report::PaperReport;
pub use scaling::{ScalingArgs, ScalingMode, ScalingReport, ScalingRun, run_scaling};
pub use stats::Spread;
pub use test_time::{TestTimeArgs, TestTimeReport, run_test_time};
