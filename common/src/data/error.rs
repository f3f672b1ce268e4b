//! Errors of the dataset layer.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while finding, downloading or decoding a dataset.
///
/// Each message names the file involved and what was wrong with it, because the
/// person reading it is usually fixing a data folder by hand.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A required dataset file is absent.
    #[error(
        "{file}: not found in {dir}; put the dataset files there or pass --data-dir DIR pointing at them"
    )]
    MissingFile {
        /// Name of the missing file (alternatives joined with " or ").
        file: String,
        /// Folder that was searched.
        dir: PathBuf,
    },

    /// The file does not start with the magic number of its format.
    #[error("{}: bad magic number {found:#010x}, expected {expected:#010x} ({what})", path.display())]
    BadMagic {
        /// File with the wrong magic.
        path: PathBuf,
        /// Magic number found.
        found: u32,
        /// Magic number required.
        expected: u32,
        /// Kind of file that was expected.
        what: &'static str,
    },

    /// Images are not of the size the dataset requires.
    #[error("{}: images are {rows}x{cols}, expected {want_rows}x{want_cols}", path.display())]
    BadDimensions {
        /// Image file.
        path: PathBuf,
        /// Rows found.
        rows: u32,
        /// Columns found.
        cols: u32,
        /// Rows required.
        want_rows: u32,
        /// Columns required.
        want_cols: u32,
    },

    /// The image file and label file hold different numbers of records.
    #[error(
        "{} holds {image_count} images but {} holds {label_count} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        /// Image file.
        images: PathBuf,
        /// Number of images it declares.
        image_count: u64,
        /// Label file.
        labels: PathBuf,
        /// Number of labels it declares.
        label_count: u64,
    },

    /// The file (after decompression) ends before its declared contents do.
    #[error("{}: truncated, expected {expected} bytes but found {found}", path.display())]
    Truncated {
        /// Truncated file.
        path: PathBuf,
        /// Bytes the header promised (including the header).
        expected: u64,
        /// Bytes actually present.
        found: u64,
    },

    /// The file (after decompression) goes on past its declared contents.
    #[error(
        "{}: longer than its header declares ({expected} bytes): data after the last {what} (another file appended, or the wrong file)",
        path.display()
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes the header declares (including the header).
        expected: u64,
        /// What the file holds: "image" or "label".
        what: &'static str,
    },

    /// A label is not a class index in 0..=9.
    #[error("{}: label {value} of record {index} is out of range 0..9", path.display())]
    LabelOutOfRange {
        /// Label (or CIFAR batch) file.
        path: PathBuf,
        /// Zero-based record index within the file.
        index: usize,
        /// Offending label value.
        value: u8,
    },

    /// A CIFAR-10 batch is not a whole number of records.
    #[error(
        "{}: size {size} bytes is not a multiple of the 3073-byte CIFAR-10 record (1 label + 3072 pixels)",
        path.display()
    )]
    CifarRecordSize {
        /// Batch file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },

    /// A gzip stream or tar archive could not be decoded.
    #[error("{}: corrupt archive: {reason}", path.display())]
    Corrupt {
        /// Archive file.
        path: PathBuf,
        /// Decoder's complaint.
        reason: String,
    },

    /// An operating-system I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// Path being read or written.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },

    /// Fetching a file over the network failed.
    #[error(
        "downloading {url} failed: {source}; download the files yourself and pass --data-dir DIR"
    )]
    Download {
        /// URL that failed.
        url: String,
        /// What went wrong (the HTTP client's or the socket's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Some of the dataset's files are absent and fetching the official ones failed.
    #[error("{missing}; fetching the official files instead failed: {download}")]
    Unobtainable {
        /// Which file the folder lacks (a [`DataError::MissingFile`]).
        missing: Box<DataError>,
        /// Why the download failed.
        #[source]
        download: Box<DataError>,
    },

    /// A downloaded file does not have the published checksum.
    #[error(
        "{file}: checksum mismatch, expected md5 {expected}, got {got} (downloaded from {url})"
    )]
    Checksum {
        /// File name.
        file: String,
        /// URL it came from.
        url: String,
        /// Published md5.
        expected: String,
        /// md5 of what arrived.
        got: String,
    },

    /// An image set was built from inconsistent parts.
    #[error("invalid image set: {0}")]
    InvalidImageSet(String),

    /// A dataset name that is not one of the supported ones.
    #[error("unknown dataset '{0}', expected one of mnist, fashion-mnist, cifar10")]
    UnknownDataset(String),
}

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: &Path, source: io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
