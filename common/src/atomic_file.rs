//! Files that are either the old version or the new one, never half of each: written to a
//! temporary file beside the target, flushed to disk, renamed over it, and the folder flushed so
//! the rename itself survives a power cut.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary file a write of `path` goes through; a crash mid-write leaves only this behind,
/// and the next write of `path` replaces it.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically, creating the folder if needed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// Writes `path` atomically with `fill`, which writes the contents into the temporary file. If
/// `fill` fails, `path` keeps its old contents.
pub fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.to_path_buf()
        }
        None => PathBuf::from("."),
    };
    let tmp = temporary_path(path);
    let mut file = File::create(&tmp)?;
    fill(&mut file)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename is a change to the folder: flush it too, or a crash may forget it.
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.json");
        write_atomically(&path, b"first").unwrap();
        let err = write_atomically_with(&path, |f| {
            f.write_all(b"half of the sec")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!temporary_path(&path).exists());
    }
}
