//! Reader for the binary version of CIFAR-10.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::idx::check_labels;
use super::{DataError, ImageSet};

/// Folder inside the official archive that holds the batches.
pub const CIFAR_FOLDER: &str = "cifar-10-batches-bin";
/// Training batches, concatenated in this order.
pub const CIFAR_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// Test batch.
pub const CIFAR_TEST_FILE: &str = "test_batch.bin";

const PIXELS: usize = 3 * 32 * 32;
const RECORD: usize = 1 + PIXELS;
/// Records decoded per read; keeps the read buffer small (about 3 MB).
const CHUNK_RECORDS: usize = 1024;

/// The folder that actually holds the batch files: `dir/cifar-10-batches-bin` or `dir` itself.
pub(crate) fn batches_dir(dir: &Path) -> PathBuf {
    let inner = dir.join(CIFAR_FOLDER);
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Loads (train, test) from `dir`, which holds `cifar-10-batches-bin/` or is that folder.
pub fn load_cifar10(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let dir = batches_dir(dir);
    let train: Vec<PathBuf> = CIFAR_TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    let test = [dir.join(CIFAR_TEST_FILE)];
    // Check every file before reading any, so a missing one is reported at once.
    for path in train.iter().chain(&test) {
        if !path.is_file() {
            return Err(DataError::MissingFile {
                file: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                dir: dir.clone(),
            });
        }
    }
    Ok((load_batches(&train)?, load_batches(&test)?))
}

/// Loads one CIFAR-10 binary batch file (e.g. `test_batch.bin`).
pub fn load_cifar_file(path: &Path) -> Result<ImageSet, DataError> {
    load_batches(&[path.to_path_buf()])
}

/// One CIFAR-10 batch file already in memory, named `<cifar batch>` in errors: the entry point
/// of the CIFAR fuzz target, through the same checks as the files.
pub fn parse_cifar_batch(bytes: &[u8]) -> Result<ImageSet, DataError> {
    let path = Path::new("<cifar batch>");
    let size = bytes.len() as u64;
    check_record_size(path, size)?;
    let records = bytes.len() / RECORD;
    let (mut images, mut labels) = (
        Vec::with_capacity(records * PIXELS),
        Vec::with_capacity(records),
    );
    let mut chunk = vec![0u8; CHUNK_RECORDS * RECORD];
    read_records(path, size, bytes, &mut chunk, &mut images, &mut labels)?;
    check_labels(path, &labels)?;
    ImageSet::new(images, labels, 3, 32, 32)
}

/// Fails unless `size` is whole records.
fn check_record_size(path: &Path, size: u64) -> Result<(), DataError> {
    if !size.is_multiple_of(RECORD as u64) {
        return Err(DataError::CifarRecordSize {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok(())
}

/// Reads and concatenates batch files into one set.
fn load_batches(paths: &[PathBuf]) -> Result<ImageSet, DataError> {
    let mut sizes = Vec::with_capacity(paths.len());
    for path in paths {
        let size = std::fs::metadata(path)
            .map_err(|e| DataError::io(path, e))?
            .len();
        check_record_size(path, size)?;
        sizes.push(size);
    }
    let records = usize::try_from(sizes.iter().sum::<u64>() / RECORD as u64)
        .map_err(|_| DataError::InvalidImageSet("CIFAR-10 batches too large".into()))?;
    // One exact allocation for all batches; records are split into it without a full copy.
    let mut images = Vec::with_capacity(records * PIXELS);
    let mut labels = Vec::with_capacity(records);
    let mut chunk = vec![0u8; CHUNK_RECORDS * RECORD];
    for (path, &size) in paths.iter().zip(&sizes) {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let first_label = labels.len();
        read_records(
            path,
            size,
            BufReader::new(file),
            &mut chunk,
            &mut images,
            &mut labels,
        )?;
        check_labels(path, &labels[first_label..])?;
    }
    ImageSet::new(images, labels, 3, 32, 32)
}

fn read_records(
    path: &Path,
    size: u64,
    mut file: impl Read,
    chunk: &mut [u8],
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), DataError> {
    let mut left = size;
    let mut done = 0u64;
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let buf = &mut chunk[..want];
        // A file that shrinks between stat and read is reported as truncated, not as a panic.
        file.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => DataError::Truncated {
                path: path.to_path_buf(),
                expected: size,
                found: done,
            },
            _ => DataError::io(path, e),
        })?;
        for record in buf.chunks_exact(RECORD) {
            labels.push(record[0]);
            images.extend_from_slice(&record[1..]);
        }
        left -= want as u64;
        done += want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn write(dir: &Path, n: usize) {
        write_all(dir, &cifar_files(n));
    }

    #[test]
    fn round_trip_concatenates_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 3);
        let (train, test) = load_cifar10(dir.path()).unwrap();
        assert_eq!(
            (train.len(), test.len(), train.shape()),
            (15, 3, (3, 32, 32))
        );
        // Image 4 is record 1 of data_batch_2.
        let batch2 = cifar_batch(3, 2);
        assert_eq!(train.image(4), &batch2[RECORD + 1..2 * RECORD]);
        assert_eq!(train.label(4), 1);
        assert_eq!(test.image(2), &cifar_batch(3, 9)[2 * RECORD + 1..]);
        assert_eq!(test.labels(), &[0, 1, 2]);
    }

    #[test]
    fn accepts_the_parent_of_the_batches_folder() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join(CIFAR_FOLDER);
        std::fs::create_dir(&inner).unwrap();
        write(&inner, 1);
        let (train, test) = load_cifar10(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (5, 1));
    }

    #[test]
    fn missing_batch_names_file_folder_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1);
        std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("data_batch_4.bin: not found in "), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn size_not_a_multiple_of_the_record_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 2);
        let mut bytes = cifar_batch(2, 0);
        bytes.pop();
        std::fs::write(dir.path().join("test_batch.bin"), bytes).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin: size 6145 bytes"), "{err}");
        assert!(err.contains("not a multiple of the 3073-byte"), "{err}");
    }

    #[test]
    fn label_out_of_range_names_file_record_and_value() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 3);
        let mut bytes = cifar_batch(3, 3);
        bytes[2 * RECORD] = 200;
        std::fs::write(dir.path().join("data_batch_3.bin"), bytes).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_3.bin: label 200 of record 2 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn short_read_is_truncation() {
        let mut chunk = vec![0u8; 2 * RECORD];
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let data = cifar_batch(1, 0);
        let err = read_records(
            Path::new("x.bin"),
            2 * RECORD as u64,
            &data[..],
            &mut chunk,
            &mut images,
            &mut labels,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.bin: truncated, expected 6146 bytes but found 0"),
            "{err}"
        );
    }
}
