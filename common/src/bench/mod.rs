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
mod test_time_report;

pub use paper::{PaperArgs, run_paper};
pub use paper_report::PaperReport;
pub use scaling::{ScalingArgs, ScalingMode, ScalingReport, ScalingRun, run_scaling};
pub use stats::Spread;
pub use test_time::{TestTimeArgs, TestTimeReport, run_test_time};

/// Maps an I/O error on `path` to the training error that names it.
pub(crate) fn io_error(
    path: &std::path::Path,
) -> impl Fn(std::io::Error) -> crate::train::TrainError + '_ {
    move |e| crate::train::TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// A figure, or "n/a" where the paper gives none.
pub(crate) fn or_na(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}
