//! Byte source for IDX files: sniffs gzip, and counts bytes so truncation can be reported exactly.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::DataError;

/// Gzip hides the real size, so a lying header must not make us reserve terabytes up front.
const MAX_PREALLOC: u64 = 256 << 20;

/// A header-then-payload reader that knows how far it got, for truncation messages.
pub(super) struct IdxReader<'a> {
    path: PathBuf,
    inner: Box<dyn Read + 'a>,
    gzip: bool,
    /// On-disk size; only meaningful for plain files.
    plain_len: u64,
    consumed: u64,
}

impl<'a> IdxReader<'a> {
    /// Opens `path`, decompressing on the fly if it starts with the gzip magic.
    pub(super) fn open(path: &Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let plain_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        Self::new(path, BufReader::with_capacity(1 << 16, file), plain_len)
    }

    /// Reads the bytes of a file already in memory; `path` names it in errors.
    pub(super) fn from_bytes(path: &Path, bytes: &'a [u8]) -> Result<Self, DataError> {
        Self::new(path, bytes, bytes.len() as u64)
    }

    fn new(path: &Path, mut buf: impl BufRead + 'a, plain_len: u64) -> Result<Self, DataError> {
        // Sniff the magic rather than trust the suffix: renamed or double-gzipped files exist.
        let gzip = buf
            .fill_buf()
            .map_err(|e| DataError::io(path, e))?
            .starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn Read + 'a> = if gzip {
            Box::new(MultiGzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        Ok(IdxReader {
            path: path.to_path_buf(),
            inner,
            gzip,
            plain_len,
            consumed: 0,
        })
    }

    fn truncated(&self, expected: u64) -> DataError {
        DataError::Truncated {
            path: self.path.clone(),
            expected,
            found: self.consumed,
        }
    }

    fn read_error(&self, e: io::Error, expected: u64) -> DataError {
        match (self.gzip, e.kind()) {
            (true, io::ErrorKind::UnexpectedEof) => self.truncated(expected),
            (true, _) => DataError::Corrupt {
                path: self.path.clone(),
                reason: format!("gzip: {e}"),
            },
            (false, _) => DataError::io(&self.path, e),
        }
    }

    /// Reads `len` bytes, `expected` being the whole file's declared size for messages.
    pub(super) fn read_vec(&mut self, len: u64, expected: u64) -> Result<Vec<u8>, DataError> {
        if !self.gzip && self.plain_len < expected {
            // Fail before allocating: the file size already tells the answer.
            return Err(DataError::Truncated {
                path: self.path.clone(),
                expected,
                found: self.plain_len,
            });
        }
        let cap = if self.gzip {
            len.min(MAX_PREALLOC)
        } else {
            len
        };
        let mut buf = Vec::with_capacity(usize::try_from(cap).unwrap_or(usize::MAX));
        // Decompress straight into the final buffer; no intermediate copy of the payload.
        let res = (&mut self.inner).take(len).read_to_end(&mut buf);
        self.consumed += buf.len() as u64;
        res.map_err(|e| self.read_error(e, expected))?;
        if (buf.len() as u64) < len {
            return Err(self.truncated(expected));
        }
        Ok(buf)
    }

    /// Fails unless the file ends here, at `expected` bytes (decompressed) of `what` records:
    /// bytes past what the header declares mean another file appended, or the wrong file.
    pub(super) fn expect_end(
        &mut self,
        expected: u64,
        what: &'static str,
    ) -> Result<(), DataError> {
        let more = DataError::TrailingData {
            path: self.path.clone(),
            expected,
            what,
        };
        if !self.gzip {
            return match self.plain_len > expected {
                true => Err(more),
                false => Ok(()),
            };
        }
        let mut byte = [0u8; 1];
        match self.inner.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(more),
            // Reading past the data is what makes the decoder check the gzip trailer: the
            // CRC-32 of the data (damage that inflated without error), its length, then any
            // further member. A trailer cut short, a checksum that does not match and bytes
            // after the stream that are no gzip member all end here; Python's gzip refuses
            // them too.
            Err(e) => Err(DataError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "after its {expected} bytes of data: {e} (a damaged or cut gzip trailer, or bytes after the gzip stream)"
                ),
            }),
        }
    }

    /// Reads big-endian header words; the header is all that is known to be expected so far.
    pub(super) fn read_u32s<const N: usize>(&mut self) -> Result<[u32; N], DataError> {
        let len = 4 * N as u64;
        let bytes = self.read_vec(len, self.consumed + len)?;
        let mut out = [0u32; N];
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(out)
    }

    /// Fails with `BadMagic` naming the file unless `found == expected`.
    pub(super) fn check_magic(
        &self,
        found: u32,
        expected: u32,
        what: &'static str,
    ) -> Result<(), DataError> {
        if found == expected {
            return Ok(());
        }
        Err(DataError::BadMagic {
            path: self.path.clone(),
            found,
            expected,
            what,
        })
    }
}
