//! Deciding where a dataset lives, fetching it if absent, and loading it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cifar::batches_dir;
use super::idx::find_idx_file;
use super::{
    CIFAR_TEST_FILE, CIFAR_TRAIN_FILES, DataError, Dataset, DatasetKind, MNIST_FILES, Source,
    configured_source, download, load_cifar10, load_mnist_like,
};

/// Environment variable naming the root under which each dataset has a `<kind name>` folder.
pub const DATA_DIR_ENV: &str = "SIAMESE_DATA_DIR";

/// The dataset folder: `--data-dir` if given, else `$SIAMESE_DATA_DIR/<kind>`, else `./data/<kind>`.
pub fn resolve_data_dir(kind: DatasetKind, cli: Option<&Path>) -> PathBuf {
    resolve_with(kind, cli, std::env::var_os(DATA_DIR_ENV))
}

fn resolve_with(kind: DatasetKind, cli: Option<&Path>, env_root: Option<OsString>) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_path_buf();
    }
    let root = env_root
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"));
    root.join(kind.name())
}

/// Whether every file `kind` needs is in `dir` (in any accepted layout or compression).
pub fn files_present(kind: DatasetKind, dir: &Path) -> bool {
    match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => MNIST_FILES
            .iter()
            .all(|stem| find_idx_file(dir, stem).is_some()),
        DatasetKind::Cifar10 => {
            let dir = batches_dir(dir);
            CIFAR_TRAIN_FILES
                .iter()
                .chain([&CIFAR_TEST_FILE])
                .all(|f| dir.join(f).is_file())
        }
    }
}

/// Reads `kind` from `dir` without touching the network.
pub fn load_dataset(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
    let start = Instant::now();
    let (train, test) = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => load_mnist_like(dir)?,
        DatasetKind::Cifar10 => load_cifar10(dir)?,
    };
    tracing::info!(
        dataset = kind.name(),
        dir = %dir.display(),
        train = train.len(),
        test = test.len(),
        ms = start.elapsed().as_millis() as u64,
        "dataset loaded"
    );
    Ok(Dataset { kind, train, test })
}

/// Resolves the folder, downloads the official files into it if they are absent, and loads them.
pub fn obtain_dataset(kind: DatasetKind, cli: Option<&Path>) -> Result<Dataset, DataError> {
    let dir = resolve_data_dir(kind, cli);
    obtain_in(kind, &dir, &configured_source(kind))
}

fn obtain_in(kind: DatasetKind, dir: &Path, source: &Source) -> Result<Dataset, DataError> {
    if !files_present(kind, dir) {
        tracing::info!(
            dataset = kind.name(),
            dir = %dir.display(),
            from = %source.base_url,
            "dataset files absent, downloading"
        );
        if let Err(download) = download(source, dir) {
            // A folder that holds some of the files is more likely a copy with one missing than
            // a fresh place to download into: say which file, not only why the fetch failed.
            return Err(match load_dataset(kind, dir) {
                Err(missing @ DataError::MissingFile { .. }) if dir.is_dir() && !is_empty(dir) => {
                    DataError::Unobtainable {
                        missing: Box::new(missing),
                        download: Box::new(download),
                    }
                }
                _ => download,
            });
        }
    }
    load_dataset(kind, dir)
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{RemoteFile, official_source};
    use super::*;

    fn mirror_of(kind: DatasetKind, files: &[(String, Vec<u8>)], url: &str) -> Source {
        // Keep the official layout but use checksums of the generated files.
        let mut src = official_source(kind).with_base_url(url);
        src.files = files
            .iter()
            .map(|(name, bytes)| RemoteFile {
                name: name.clone(),
                md5: md5_hex(bytes),
            })
            .collect();
        src
    }

    #[test]
    fn data_dir_precedence() {
        let k = DatasetKind::FashionMnist;
        let cli = Path::new("/x/y");
        assert_eq!(resolve_with(k, Some(cli), Some("/env".into())), cli);
        assert_eq!(
            resolve_with(k, None, Some("/env".into())),
            Path::new("/env/fashion-mnist")
        );
        assert_eq!(
            resolve_with(k, None, Some("".into())),
            Path::new("data/fashion-mnist")
        );
        assert_eq!(
            resolve_with(DatasetKind::Cifar10, None, None),
            Path::new("data/cifar10")
        );
    }

    #[test]
    fn files_present_sees_each_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!files_present(DatasetKind::Mnist, dir.path()));
        let mut files = mnist_files(1, 1);
        // One file uncompressed without suffix: still counts.
        files[2] = ("t10k-images-idx3-ubyte".into(), b"x".to_vec());
        write_all(dir.path(), &files[..3]);
        assert!(!files_present(DatasetKind::Mnist, dir.path()));
        write_all(dir.path(), &files[3..]);
        assert!(files_present(DatasetKind::Mnist, dir.path()));
        assert!(!files_present(DatasetKind::Cifar10, dir.path()));
        let nested = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&nested).unwrap();
        write_all(&nested, &cifar_files(1));
        assert!(files_present(DatasetKind::Cifar10, dir.path()));
        assert!(files_present(DatasetKind::Cifar10, &nested));
    }

    #[test]
    fn obtain_downloads_when_absent_then_reuses() {
        let files = mnist_files(5, 2);
        let url = serve(files.clone());
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mnist");
        let src = mirror_of(DatasetKind::Mnist, &files, &url);
        let ds = obtain_in(DatasetKind::Mnist, &dir, &src).unwrap();
        assert_eq!(
            (ds.kind, ds.train.len(), ds.test.len()),
            (DatasetKind::Mnist, 5, 2)
        );
        // Present now, so an unreachable source is never contacted.
        let offline = mirror_of(DatasetKind::Mnist, &files, &refused_url());
        let again = obtain_in(DatasetKind::Mnist, &dir, &offline).unwrap();
        assert_eq!(again.digest(), ds.digest());
        assert_eq!(load_dataset(DatasetKind::Mnist, &dir).unwrap(), ds);
    }

    #[test]
    fn obtain_cifar_from_a_tar_gz_mirror() {
        let archive = vec![("cifar-10-binary.tar.gz".to_string(), cifar_tar_gz(1))];
        let url = serve(archive.clone());
        let root = tempfile::tempdir().unwrap();
        let src = mirror_of(DatasetKind::Cifar10, &archive, &url);
        let ds = obtain_in(DatasetKind::Cifar10, root.path(), &src).unwrap();
        assert_eq!((ds.train.len(), ds.test.len()), (5, 1));
        assert_eq!(ds.train.shape(), (3, 32, 32));
    }

    #[test]
    fn obtain_without_network_explains_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("fashion-mnist");
        let src = official_source(DatasetKind::FashionMnist).with_base_url(&refused_url());
        let err = obtain_in(DatasetKind::FashionMnist, &dir, &src)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("download the files yourself and pass --data-dir DIR"),
            "{err}"
        );
        assert!(listing(&dir).is_empty());
    }

    #[test]
    fn a_folder_missing_one_file_names_it_when_the_download_fails() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in mnist_files(4, 2) {
            if !name.starts_with("t10k-labels") {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
        }
        let src = official_source(DatasetKind::Mnist).with_base_url(&refused_url());
        let err = obtain_in(DatasetKind::Mnist, dir.path(), &src)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte"), "{err}");
        assert!(err.contains("not found in"), "{err}");
        assert!(
            err.contains("fetching the official files instead failed"),
            "{err}"
        );
    }

    #[test]
    fn load_dataset_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_dataset(DatasetKind::Cifar10, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_batch_1.bin: not found in"), "{err}");
    }
}
