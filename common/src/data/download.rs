//! Fetching dataset files, verified by md5, without leaving partial files behind.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::bufread::GzDecoder;
use md5::{Digest, Md5};

use super::images::to_hex;
use super::{DataError, RemoteFile, Source};

/// Fetches every file of `source` into `dir` (created if needed), verifying md5s.
///
/// Files already present with the right checksum are kept. On any failure the
/// file being fetched is removed, so `dir` never holds a partial or unverified file.
pub fn download(source: &Source, dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    for file in &source.files {
        let target = dir.join(&file.name);
        let url = source.url(file);
        if target.is_file() && md5_of_file(&target)? == file.md5.to_ascii_lowercase() {
            tracing::info!(file = %target.display(), "already downloaded and verified");
        } else {
            fetch(&url, file, dir, &target)?;
        }
        if source.extract_tar_gz {
            let unpacked = extract(&target, dir);
            // The archive is only a vehicle; keeping it would double the disk use.
            let removed = fs::remove_file(&target).map_err(|e| DataError::io(&target, e));
            unpacked?;
            removed?;
        }
    }
    Ok(())
}

/// Deletes a temporary path when dropped, unless told the path was kept.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// Largest file a download may bring (CIFAR-10's archive, the largest, is 163 MB): a server
/// that sends more is cut off.
pub const MAX_DOWNLOAD_BYTES: u64 = 512 << 20;
/// Longest a download may take, body included.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn fetch(url: &str, file: &RemoteFile, dir: &Path, target: &Path) -> Result<(), DataError> {
    let partial = dir.join(format!(".{}.partial", file.name));
    let mut cleanup = Cleanup(Some(partial.clone()));
    let download_err = |source: Box<dyn std::error::Error + Send + Sync>| DataError::Download {
        url: url.to_string(),
        source,
    };
    tracing::info!(%url, to = %target.display(), "downloading");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_global(Some(DOWNLOAD_TIMEOUT))
        .build()
        .into();
    // Ask for the bytes as stored: a transparently decompressed .gz would fail its md5.
    let response = agent
        .get(url)
        .header("Accept-Encoding", "identity")
        .call()
        .map_err(|e| download_err(e.into()))?;
    let mut body = response.into_body().into_reader();
    let mut out = File::create(&partial).map_err(|e| DataError::io(&partial, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut next_log) = (0u64, 32u64 << 20);
    loop {
        let n = body.read(&mut buf).map_err(|e| download_err(e.into()))?;
        if n == 0 {
            break;
        }
        if total + n as u64 > MAX_DOWNLOAD_BYTES {
            return Err(download_err(
                format!("the server sent more than {} MiB", MAX_DOWNLOAD_BYTES >> 20).into(),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(&partial, e))?;
        total += n as u64;
        if total >= next_log {
            tracing::info!(%url, mib = total >> 20, "downloading");
            next_log += 32 << 20;
        }
    }
    out.sync_all().map_err(|e| DataError::io(&partial, e))?;
    drop(out);
    let got = to_hex(&hasher.finalize());
    let expected = file.md5.to_ascii_lowercase();
    if got != expected {
        return Err(DataError::Checksum {
            file: file.name.clone(),
            url: url.to_string(),
            expected,
            got,
        });
    }
    fs::rename(&partial, target).map_err(|e| DataError::io(target, e))?;
    cleanup.0 = None;
    tracing::info!(file = %target.display(), bytes = total, "downloaded and verified");
    Ok(())
}

fn md5_of_file(path: &Path) -> Result<String, DataError> {
    let mut reader = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            return Ok(to_hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Unpacks a .tar.gz into a hidden folder of `dir`, then moves its top-level entries into `dir`.
fn extract(archive: &Path, dir: &Path) -> Result<(), DataError> {
    let tmp = dir.join(".extract.partial");
    if tmp.exists() {
        // Left by an earlier run that was killed; it is ours to discard.
        fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let _cleanup = Cleanup(Some(tmp.clone()));
    tracing::info!(archive = %archive.display(), "extracting");
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    // tar's unpack refuses entries that would escape `tmp`.
    tar::Archive::new(GzDecoder::new(BufReader::new(file)))
        .unpack(&tmp)
        .map_err(|e| DataError::Corrupt {
            path: archive.to_path_buf(),
            reason: e.to_string(),
        })?;
    move_entries(&tmp, dir)
}

/// Renames each entry of `from` into `to`; a folder that already exists there is merged.
fn move_entries(from: &Path, to: &Path) -> Result<(), DataError> {
    for entry in fs::read_dir(from).map_err(|e| DataError::io(from, e))? {
        let src = entry.map_err(|e| DataError::io(from, e))?.path();
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = to.join(name);
        if src.is_dir() && dst.is_dir() {
            move_entries(&src, &dst)?;
        } else {
            fs::rename(&src, &dst).map_err(|e| DataError::io(&dst, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{load_cifar10, load_mnist_like};
    use super::*;

    /// A source serving `served` and expecting the md5s of `expected`.
    fn source(base_url: &str, expected: &[(String, Vec<u8>)], tar: bool) -> Source {
        Source {
            base_url: String::new(),
            files: expected
                .iter()
                .map(|(name, bytes)| RemoteFile {
                    name: name.clone(),
                    md5: md5_hex(bytes),
                })
                .collect(),
            extract_tar_gz: tar,
        }
        .with_base_url(base_url)
    }

    #[test]
    fn downloads_mnist_like_files_that_then_load() {
        let files = mnist_files(4, 3);
        let url = serve(files.clone());
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nested/mnist");
        download(&source(&url, &files, false), &target).unwrap();
        let mut names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
        names.sort();
        assert_eq!(listing(&target), names);
        let (train, test) = load_mnist_like(&target).unwrap();
        assert_eq!((train.len(), test.len()), (4, 3));
        // A second call finds everything verified and fetches nothing (server now irrelevant).
        download(&source(&refused_url(), &files, false), &target).unwrap();
    }

    #[test]
    fn downloads_and_extracts_cifar_tar_gz() {
        let archive = vec![("cifar-10-binary.tar.gz".to_string(), cifar_tar_gz(2))];
        let url = serve(archive.clone());
        let dir = tempfile::tempdir().unwrap();
        download(&source(&url, &archive, true), dir.path()).unwrap();
        assert_eq!(listing(dir.path()), ["cifar-10-batches-bin"]);
        let (train, test) = load_cifar10(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (10, 2));
        assert_eq!(test.image(1), &cifar_batch(2, 9)[3074..]);
    }

    #[test]
    fn checksum_mismatch_names_both_sums_and_leaves_nothing() {
        let files = mnist_files(2, 1);
        let url = serve(files.clone());
        let mut src = source(&url, &files[..1], false);
        src.files[0].md5 = "0123456789abcdef0123456789abcdef".into();
        let dir = tempfile::tempdir().unwrap();
        let err = download(&src, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz: checksum mismatch"),
            "{err}"
        );
        assert!(
            err.contains("expected md5 0123456789abcdef0123456789abcdef"),
            "{err}"
        );
        assert!(
            err.contains(&format!("got {}", md5_hex(&files[0].1))),
            "{err}"
        );
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }

    #[test]
    fn http_404_points_at_data_dir_and_leaves_nothing() {
        let files = mnist_files(1, 1);
        let url = serve(Vec::new());
        let dir = tempfile::tempdir().unwrap();
        let err = download(&source(&url, &files, false), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{url}train-images-idx3-ubyte.gz")),
            "{err}"
        );
        assert!(err.contains("404"), "{err}");
        assert!(err.contains("pass --data-dir DIR"), "{err}");
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }

    #[test]
    fn connection_refused_points_at_data_dir_and_leaves_nothing() {
        let files = mnist_files(1, 1);
        let dir = tempfile::tempdir().unwrap();
        let err = download(&source(&refused_url(), &files, false), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("downloading http://127.0.0.1:"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }

    #[test]
    fn corrupt_archive_with_right_checksum_is_reported_and_removed() {
        let archive = vec![(
            "cifar-10-binary.tar.gz".to_string(),
            gz(b"not a tar file at all, sorry"),
        )];
        let url = serve(archive.clone());
        let dir = tempfile::tempdir().unwrap();
        let err = download(&source(&url, &archive, true), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cifar-10-binary.tar.gz: corrupt archive"),
            "{err}"
        );
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }
}
