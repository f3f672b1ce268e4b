//! The training curves of every run: the loss and accuracy PNG that `bench paper` draws,
//! written beside the results file.

use std::path::{Path, PathBuf};

use crate::bench::plot::plot_training_curves;
use siamese_common::results::RunResults;

/// `results/run.json` → `results/run-curves.png`.
pub fn curves_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-curves.png"))
}

/// Draws the run's per-epoch loss and accuracy beside its results file; the path written, or
/// why not (a drawing failure does not fail a run whose results are written).
pub fn write_curves(results: &RunResults, out: &Path) -> Result<PathBuf, String> {
    let path = curves_path(out);
    let title = format!("{} ({} epochs)", results.dataset, results.epochs.len());
    plot_training_curves(&title, &results.epochs, &path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_go_beside_the_results() {
        assert_eq!(
            curves_path(Path::new("results/mnist-1.json")),
            Path::new("results/mnist-1-curves.png")
        );
    }
}
