//! Reader for the IDX files of MNIST and Fashion-MNIST, plain or gzip-compressed.

use std::path::{Path, PathBuf};

use super::idx_reader::IdxReader;
use super::{DataError, ImageSet};

/// Stems of the four IDX files: train images, train labels, test images, test labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

const IMAGE_MAGIC: u32 = 0x0000_0803;
const LABEL_MAGIC: u32 = 0x0000_0801;
const SIDE: u32 = 28;
const IMAGE_HEADER: u64 = 16;
const LABEL_HEADER: u64 = 8;
/// Most images an IDX file may declare (MNIST's and Fashion-MNIST's largest has 60,000): a
/// header that declares more is refused before anything is allocated or inflated.
pub const MAX_IDX_IMAGES: u32 = 100_000;

/// Loads one IDX image file and its label file into an `ImageSet` of 1x28x28 images.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    read_idx_pair(
        IdxReader::open(images)?,
        images,
        || IdxReader::open(labels),
        labels,
    )
}

/// `load_idx_pair` on files already in memory (plain or gzip), named `images` and `labels` in
/// errors: the entry point of the IDX fuzz target.
pub fn parse_idx_pair(images: &[u8], labels: &[u8]) -> Result<ImageSet, DataError> {
    let (image_name, label_name) = (Path::new("<images>"), Path::new("<labels>"));
    read_idx_pair(
        IdxReader::from_bytes(image_name, images)?,
        image_name,
        || IdxReader::from_bytes(label_name, labels),
        label_name,
    )
}

/// The label file is opened only once the image header passed, as before any payload is read.
fn read_idx_pair<'a>(
    mut img: IdxReader<'a>,
    images: &Path,
    open_labels: impl FnOnce() -> Result<IdxReader<'a>, DataError>,
    labels: &Path,
) -> Result<ImageSet, DataError> {
    // Magic first: a label file passed as images is too short for a full image header.
    let [magic] = img.read_u32s::<1>()?;
    img.check_magic(magic, IMAGE_MAGIC, "IDX image file")?;
    let [count, rows, cols] = img.read_u32s::<3>()?;
    if count > MAX_IDX_IMAGES {
        return Err(DataError::Corrupt {
            path: images.to_path_buf(),
            reason: format!(
                "its header declares {count} images, more than the {MAX_IDX_IMAGES} this reader accepts"
            ),
        });
    }
    if (rows, cols) != (SIDE, SIDE) {
        return Err(DataError::BadDimensions {
            path: images.to_path_buf(),
            rows,
            cols,
            want_rows: SIDE,
            want_cols: SIDE,
        });
    }
    let mut lab = open_labels()?;
    let [magic] = lab.read_u32s::<1>()?;
    lab.check_magic(magic, LABEL_MAGIC, "IDX label file")?;
    let [label_count] = lab.read_u32s::<1>()?;
    if count != label_count {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: count.into(),
            labels: labels.to_path_buf(),
            label_count: label_count.into(),
        });
    }

    let n = u64::from(count);
    let pixel_bytes = n * u64::from(SIDE * SIDE);
    let pixels = img.read_vec(pixel_bytes, IMAGE_HEADER + pixel_bytes)?;
    img.expect_end(IMAGE_HEADER + pixel_bytes, "image")?;
    let label_bytes = lab.read_vec(n, LABEL_HEADER + n)?;
    lab.expect_end(LABEL_HEADER + n, "label")?;
    check_labels(labels, &label_bytes)?;
    ImageSet::new(pixels, label_bytes, 1, SIDE as usize, SIDE as usize)
}

/// Pixels of an IDX image file of any image size, without labels (for inference on images by
/// index): the bytes of every image one after another, rows and columns.
pub fn load_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize), DataError> {
    let mut img = IdxReader::open(path)?;
    let [magic] = img.read_u32s::<1>()?;
    img.check_magic(magic, IMAGE_MAGIC, "IDX image file")?;
    let [count, rows, cols] = img.read_u32s::<3>()?;
    let pixel_bytes = u64::from(count) * u64::from(rows) * u64::from(cols);
    let pixels = img.read_vec(pixel_bytes, IMAGE_HEADER + pixel_bytes)?;
    img.expect_end(IMAGE_HEADER + pixel_bytes, "image")?;
    Ok((pixels, rows as usize, cols as usize))
}

/// Fails on the first label outside 0..=9.
pub(crate) fn check_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    match labels.iter().position(|&l| l > 9) {
        None => Ok(()),
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            value: labels[index],
        }),
    }
}

/// Path of `stem` or `stem.gz` in `dir`, preferring the uncompressed file.
pub(crate) fn find_idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Loads (train, test) from the four IDX files in `dir`, each plain or `.gz`.
pub fn load_mnist_like(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    // Look for all four first so a missing test file is reported before a slow train load.
    let mut paths = Vec::with_capacity(MNIST_FILES.len());
    for stem in MNIST_FILES {
        paths.push(
            find_idx_file(dir, stem).ok_or_else(|| DataError::MissingFile {
                file: format!("{stem} or {stem}.gz"),
                dir: dir.to_path_buf(),
            })?,
        );
    }
    let train = load_idx_pair(&paths[0], &paths[1])?;
    let test = load_idx_pair(&paths[2], &paths[3])?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// Writes an image and a label file into a fresh tempdir and loads them.
    fn load(img: Vec<u8>, lab: Vec<u8>) -> (tempfile::TempDir, Result<ImageSet, DataError>) {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("img-idx3"), dir.path().join("lab-idx1"));
        std::fs::write(&i, img).unwrap();
        std::fs::write(&l, lab).unwrap();
        let res = load_idx_pair(&i, &l);
        (dir, res)
    }

    fn err_of(img: Vec<u8>, lab: Vec<u8>) -> String {
        load(img, lab).1.unwrap_err().to_string()
    }

    fn good(n: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let px = pixels(n as usize, 784, 3);
        let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
        (
            idx_images(0x803, n, 28, 28, &px),
            idx_labels(0x801, n, &labels),
            px,
        )
    }

    #[test]
    fn round_trip_plain_and_gzip_with_or_without_suffix() {
        let (img, lab, px) = good(5);
        for (i, l) in [
            (img.clone(), lab.clone()),
            (gz(&img), gz(&lab)),
            (gz(&img), lab.clone()),
        ] {
            let set = load(i, l).1.unwrap();
            assert_eq!((set.len(), set.shape()), (5, (1, 28, 28)));
            assert_eq!(set.labels(), &[0, 7, 4, 1, 8]);
            assert_eq!(set.image(3), &px[3 * 784..4 * 784]);
        }
    }

    #[test]
    fn bad_magic_is_named_with_both_numbers() {
        let (img, lab, _) = good(2);
        let err = err_of(lab.clone(), lab.clone());
        assert!(err.contains("img-idx3"), "{err}");
        assert!(
            err.contains("bad magic number 0x00000801, expected 0x00000803 (IDX image file)"),
            "{err}"
        );
        let err = err_of(img.clone(), gz(&img));
        assert!(
            err.contains("lab-idx1") && err.contains("expected 0x00000801"),
            "{err}"
        );
    }

    #[test]
    fn wrong_dimensions_are_rejected() {
        let err = err_of(
            idx_images(0x803, 1, 32, 32, &[0; 1024]),
            idx_labels(0x801, 1, &[0]),
        );
        assert!(
            err.contains("img-idx3: images are 32x32, expected 28x28"),
            "{err}"
        );
    }

    #[test]
    fn a_gzip_header_declaring_a_huge_count_is_refused_before_inflating() {
        // Four billion images would be 3 TB once inflated; the header alone must stop it.
        let img = gz(&idx_images(0x803, u32::MAX, 28, 28, &[0; 784]));
        let err = err_of(img, idx_labels(0x801, 1, &[0]));
        assert!(
            err.contains("img-idx3") && err.contains("declares 4294967295 images"),
            "{err}"
        );
    }

    #[test]
    fn count_mismatch_names_both_files_and_counts() {
        let (img, _, _) = good(3);
        let err = err_of(img, idx_labels(0x801, 2, &[1, 2]));
        assert!(err.contains("img-idx3 holds 3 images"), "{err}");
        assert!(err.contains("lab-idx1 holds 2 labels"), "{err}");
    }

    #[test]
    fn truncation_reports_expected_and_found_bytes() {
        let (mut img, lab, _) = good(3);
        img.truncate(16 + 2 * 784 + 10);
        let err = err_of(img.clone(), lab.clone());
        assert!(
            err.contains("img-idx3: truncated, expected 2368 bytes but found 1594"),
            "{err}"
        );
        // The same content gzip-compressed: only the decompressed length can tell.
        let err = err_of(gz(&img), lab.clone());
        assert!(
            err.contains("img-idx3: truncated, expected 2368 bytes but found 1594"),
            "{err}"
        );
        let err = err_of(vec![0, 0, 8, 3, 0], lab.clone());
        assert!(
            err.contains("truncated, expected 16 bytes but found 5"),
            "{err}"
        );
        let err = err_of(vec![0, 0], lab);
        assert!(
            err.contains("truncated, expected 4 bytes but found 2"),
            "{err}"
        );
    }

    #[test]
    fn cut_gzip_stream_is_reported_not_panicked() {
        let (img, lab, _) = good(50);
        let mut z = gz(&img);
        z.truncate(z.len() / 2);
        let err = err_of(z, lab);
        assert!(err.contains("img-idx3"), "{err}");
        assert!(
            err.contains("truncated") || err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn garbage_gzip_is_corrupt() {
        let (img, lab, _) = good(2);
        let mut z = gz(&img);
        for b in &mut z[10..] {
            *b ^= 0x5a;
        }
        let err = err_of(z, lab);
        assert!(err.contains("img-idx3: corrupt archive: gzip"), "{err}");
    }

    #[test]
    fn data_past_the_declared_records_is_refused_plain_or_gzip() {
        let (img, mut lab, _) = good(3);
        lab.extend_from_slice(b"xy");
        for l in [lab.clone(), gz(&lab)] {
            let err = err_of(img.clone(), l);
            assert!(
                err.contains("lab-idx1: longer than its header declares (11 bytes): data after the last label"),
                "{err}"
            );
        }
        // A second gzip member with more data counts too.
        let (mut two, lab, _) = good(3);
        let one = gz(&two);
        two = [one.clone(), gz(b"more")].concat();
        let err = err_of(two, lab.clone());
        assert!(err.contains("data after the last image"), "{err}");
        // Bytes after the gzip stream that are no gzip member.
        let padded = [one, b"garbage".to_vec()].concat();
        let err = err_of(padded, lab);
        assert!(err.contains("or bytes after the gzip stream"), "{err}");
    }

    #[test]
    fn a_gzip_checksum_that_does_not_match_is_corrupt() {
        let (img, lab, _) = good(3);
        let mut z = gz(&img);
        // The trailer: CRC-32, then the length, 4 bytes each. The data inflates cleanly; only
        // the checksum tells.
        let crc = z.len() - 8;
        z[crc] ^= 0x01;
        let err = err_of(z.clone(), lab.clone());
        assert!(
            err.contains(
                "after its 2368 bytes of data: corrupt gzip stream does not have a matching checksum"
            ),
            "{err}"
        );
        // A trailer cut short.
        z.truncate(z.len() - 3);
        let err = err_of(z, lab);
        assert!(
            err.contains(
                "img-idx3: corrupt archive: after its 2368 bytes of data: unexpected end of file"
            ),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range_names_record_and_value() {
        let (img, _, _) = good(4);
        let err = err_of(img, gz(&idx_labels(0x801, 4, &[1, 2, 10, 3])));
        assert!(
            err.contains("lab-idx1: label 10 of record 2 is out of range 0..9"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_file_folder_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = mnist_files(2, 1);
        files.retain(|(n, _)| !n.starts_with("t10k-labels"));
        write_all(dir.path(), &files);
        let err = load_mnist_like(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn load_mnist_like_reads_both_splits() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &mnist_files(3, 2));
        let (train, test) = load_mnist_like(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (3, 2));
        assert_eq!(train.image(2), &pixels(3, 784, 1)[2 * 784..]);
        assert_eq!(test.labels(), &[0, 1]);
    }

    #[test]
    fn real_mnist_when_available() {
        // From common/ in the workspace, or from a scratch crate beside shared/.
        let candidates = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/datasets/mnist"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/mnist"),
        ];
        let Some(dir) = candidates.iter().map(Path::new).find(|p| p.is_dir()) else {
            eprintln!("skipping: no MNIST at {candidates:?}");
            return;
        };
        let (train, test) = load_mnist_like(dir).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!((train.label(0), test.label(0)), (5, 7));
        assert_eq!(train.shape(), (1, 28, 28));
    }
}
