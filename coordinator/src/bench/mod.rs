//! Benchmarks that print the figures users compare trainers by: scaling efficiency of the real
//! cluster, the paper's test-time table, and all the paper's tables and figures in one run.
//! Speed is measured here, never asserted in tests. They live in the `coordinator` crate, not
//! the library, so that the `worker` binary links no plotting or benchmark code.

mod error;
mod files;
mod machine;
pub mod pair_grid;
pub mod paper;
pub mod paper_figures;
pub mod plot;
pub mod scaling;
pub mod stats;
pub mod test_time;

pub use error::BenchError;
pub use paper::{PaperArgs, run_paper};
pub use scaling::{ScalingArgs, run_scaling};
pub use test_time::{TestTimeArgs, run_test_time};

/// A figure, or "n/a" where the paper gives none.
fn or_na(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}
