//! Writing a benchmark's reports: every file atomically (a temporary file beside it, fsync,
//! rename), so an interrupted benchmark leaves the previous report or the new one, never half.

use std::path::{Path, PathBuf};

use super::error::{BenchError, io_error};

/// Writes `value` as pretty JSON to `path`, creating its folder.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    let json = serde_json::to_vec_pretty(value).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_bytes(path, &json)
}

/// Writes `bytes` to `path`, creating its folder.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    siamese_common::atomic_file::write_atomically(path, bytes).map_err(io_error(path))
}

/// Has `draw` write a PNG to a temporary file beside `path` (its name keeps the `.png` that
/// tells the encoder the format), then renames it over `path`.
pub fn write_png(
    path: &Path,
    draw: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), BenchError> {
    let tmp = temporary_png(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    draw(&tmp).map_err(|message| BenchError::Plot {
        path: path.to_path_buf(),
        message,
    })?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

fn temporary_png(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{stem}.tmp.png"))
}
