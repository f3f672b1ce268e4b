//! `--scores FILE`: every test pair's indices, label and similarity as CSV, so that anyone can
//! compute their own figures (precision at a threshold, EER, calibration) from a run.

use std::io::Write;
use std::path::{Path, PathBuf};

use siamese_common::pairs::Pair;
use siamese_common::train::{RunObserver, TestScores};

/// The CSV's header: `a` and `b` index the official test file; `same` is the pair's label
/// (1 for two images of one class); `similarity` is the model's s in (0, 1).
pub const HEADER: &str = "pair,a,b,same,similarity,class_a,class_b";

/// Writes the pairs and their scores to `path` (its folder created), one row per pair.
pub fn write_scores(
    path: &Path,
    pairs: &[Pair],
    scores: &[f32],
    labels: &[u8],
) -> std::io::Result<()> {
    if pairs.len() != scores.len() {
        return Err(std::io::Error::other(format!(
            "{} pairs but {} scores",
            pairs.len(),
            scores.len()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{HEADER}")?;
    let class = |i: u32| labels.get(i as usize).map_or(-1, |&l| i32::from(l));
    for (k, (p, s)) in pairs.iter().zip(scores).enumerate() {
        // `{s}` prints the shortest text that reads back as the same f32.
        writeln!(
            out,
            "{k},{},{},{},{s},{},{}",
            p.a,
            p.b,
            u8::from(p.same),
            class(p.a),
            class(p.b)
        )?;
    }
    out.flush()
}

/// Writes the run's test scores when they come; the error, if any, is kept for the caller.
pub struct ScoresFile {
    path: PathBuf,
    /// Why the file could not be written.
    pub error: Option<std::io::Error>,
}

impl ScoresFile {
    /// Writes to `path` once the test pairs are scored.
    pub fn new(path: PathBuf) -> Self {
        ScoresFile { path, error: None }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RunObserver for ScoresFile {
    fn test_scored(&mut self, s: &TestScores<'_>) {
        if let Err(e) = write_scores(&self.path, s.pairs, s.scores, s.labels) {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_pair_with_its_label_and_score() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/scores.csv");
        let pairs = [
            Pair {
                a: 3,
                b: 1,
                same: true,
            },
            Pair {
                a: 0,
                b: 2,
                same: false,
            },
        ];
        write_scores(&path, &pairs, &[0.75, 0.125], &[4, 4, 9, 4]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{HEADER}\n0,3,1,1,0.75,4,4\n1,0,2,0,0.125,4,9\n")
        );
        assert!(write_scores(&path, &pairs, &[0.5], &[]).is_err());
    }
}
