//! The files a run will write, checked before any work: a results file given the checkpoint's
//! name (`--out run.safetensors`) would be written over the trained weights at the end, and a
//! folder that cannot be written would fail the run only when its first file falls due, after
//! an epoch's work or, for the results and the test scores, after all of it.

use std::path::{Path, PathBuf};

use crate::atomic_file::temporary_path;

/// What `--select best-val` adds to the checkpoint's name for the weights it tests.
pub const BEST_WEIGHTS_EXTENSION: &str = "best.safetensors";

/// What `--ema` adds to the checkpoint's name for the average it tests.
pub const AVERAGE_WEIGHTS_EXTENSION: &str = "ema.safetensors";

/// One file a run writes: what it is (the flag that names it, or whose name it follows) and
/// where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    /// The file's part in the run, as a user would name it, e.g. "--out (the results)".
    pub what: String,
    /// Where it goes.
    pub path: PathBuf,
}

impl OutputFile {
    /// The file at `path`, described as `what`.
    pub fn new(what: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        OutputFile {
            what: what.into(),
            path: path.into(),
        }
    }
}

/// Why a run's files cannot be written where the flags say.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    /// Two of the run's files have one path: the later write would replace the earlier.
    #[error(
        "{first} and {second} are the same file, {path}: one would be written over the other; give them different paths"
    )]
    SamePath {
        /// The first file's part.
        first: String,
        /// The second file's part.
        second: String,
        /// The path both have.
        path: PathBuf,
    },
    /// The path is a folder: the file cannot replace it.
    #[error("{what} {path} is a folder; give a file's path")]
    IsFolder {
        /// The file's part.
        what: String,
        /// The path.
        path: PathBuf,
    },
    /// A file stands where the path needs a folder.
    #[error("{what} {path}: {file} is a file, not a folder")]
    NotAFolder {
        /// The file's part.
        what: String,
        /// The path.
        path: PathBuf,
        /// The file in the way.
        file: PathBuf,
    },
    /// The file's folder does not exist and cannot be made.
    #[error("{what} {path}: its folder {folder} cannot be made: {source}")]
    Folder {
        /// The file's part.
        what: String,
        /// The path.
        path: PathBuf,
        /// The folder.
        folder: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The folder exists but a file cannot be written in it.
    #[error("{what} {path} cannot be written: {source}")]
    NotWritable {
        /// The file's part.
        what: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Checks that every file can be written and that no two share a path, making the folders the
/// run would make anyway. Each folder is probed with the temporary file the run's atomic write
/// of that file goes through, created and removed again, so nothing of the run's is touched.
pub fn check_output_files(files: &[OutputFile]) -> Result<(), OutputFileError> {
    let mut seen: Vec<(PathBuf, &OutputFile)> = Vec::with_capacity(files.len());
    for file in files {
        let identity = writable(file)?;
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == identity) {
            return Err(OutputFileError::SamePath {
                first: first.what.clone(),
                second: file.what.clone(),
                path: file.path.clone(),
            });
        }
        seen.push((identity, file));
    }
    Ok(())
}

/// Makes the file's folder and probes it; the file's path with its folder resolved (symbolic
/// links and `..` followed), so that two spellings of one file compare equal.
fn writable(file: &OutputFile) -> Result<PathBuf, OutputFileError> {
    let path = &file.path;
    if path.is_dir() {
        return Err(OutputFileError::IsFolder {
            what: file.what.clone(),
            path: path.clone(),
        });
    }
    let folder = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(folder) => folder.to_path_buf(),
        None => PathBuf::from("."),
    };
    let folder_error = |source| OutputFileError::Folder {
        what: file.what.clone(),
        path: path.clone(),
        folder: folder.clone(),
        source,
    };
    if let Some(file_in_the_way) = folder.ancestors().find(|a| a.exists() && !a.is_dir()) {
        return Err(OutputFileError::NotAFolder {
            what: file.what.clone(),
            path: path.clone(),
            file: file_in_the_way.to_path_buf(),
        });
    }
    std::fs::create_dir_all(&folder).map_err(folder_error)?;
    let resolved = folder.canonicalize().map_err(folder_error)?;
    probe(path).map_err(|source| OutputFileError::NotWritable {
        what: file.what.clone(),
        path: path.clone(),
        source,
    })?;
    Ok(match path.file_name() {
        Some(name) => resolved.join(name),
        None => resolved,
    })
}

/// Creates and removes the temporary file an atomic write of `path` would use.
fn probe(path: &Path) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    std::fs::File::create(&tmp)?;
    std::fs::remove_file(&tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_spellings_of_one_path_are_refused_naming_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("run.safetensors");
        let b = dir.path().join("sub/../run.safetensors");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = check_output_files(&[
            OutputFile::new("--out (the results)", &a),
            OutputFile::new("--scores", dir.path().join("scores.csv")),
            OutputFile::new("the checkpoint", &b),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--out (the results) and the checkpoint are the same file"));
        assert!(text.contains("sub/../run.safetensors"), "{text}");
        // The probe leaves nothing behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["sub"]);
    }

    #[test]
    fn distinct_writable_files_pass_and_their_folders_are_made() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            OutputFile::new("--out", dir.path().join("a/b/run.json")),
            OutputFile::new("--checkpoint", dir.path().join("a/b/run.safetensors")),
        ];
        check_output_files(&files).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert!(!dir.path().join("a/b/run.json").exists());
    }

    #[test]
    fn a_folder_and_a_file_in_place_of_a_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_output_files(&[OutputFile::new("--out", dir.path())]).unwrap_err();
        assert!(matches!(err, OutputFileError::IsFolder { .. }), "{err}");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let err =
            check_output_files(&[OutputFile::new("--scores", file.join("a/s.csv"))]).unwrap_err();
        assert!(matches!(err, OutputFileError::NotAFolder { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with("--scores "), "{text}");
        assert!(text.ends_with("plain is a file, not a folder"), "{text}");
    }
}
