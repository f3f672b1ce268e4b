//! Shared memory between the coordinator and the workers on its own host: weights and gradients
//! go through one mapped file, and the gRPC stream carries only the small control messages.
//!
//! Why: on a host whose cores are all busy computing, pushing four ~250 KB messages a step
//! through HTTP/2 (encode, copy into frames, the kernel, decode) cost the coordinator about 3 ms
//! of CPU a step, a quarter of the step (docs/benchmarks.md). A worker proves it sees the same
//! memory by echoing the random nonce it read from the file's header in its `Join`; a worker on
//! another host cannot, and keeps the gRPC payloads.
//!
//! Layout: a 64-byte header (magic, nonce, parameter count, slot count, weights version), the
//! weights, then the gradient slots the coordinator hands out (two per worker, more for
//! replacements; a lost worker's slots are never handed out again, so a stopped worker that wakes
//! up cannot write into another's gradient). The weights version is a seqlock: the writer marks
//! it `WRITING` before it copies and stores the new version after, so a reader can tell a torn
//! copy from a whole one.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use memmap2::MmapMut;

use crate::cluster::ClusterError;

const MAGIC: [u8; 8] = *b"SNSHM001";
const HEADER: usize = 64;
const VERSION_AT: usize = 32;
/// Stored as the weights version while the weights are being written.
const WRITING: u64 = u64::MAX;

/// Version bit of a reduced gradient in the weights area (allreduce runs, where the weights
/// area is free after the first weights): `REDUCED | step`.
pub const REDUCED: u64 = 1 << 62;

/// One mapping of the shared file.
pub struct SharedRegion {
    map: MmapMut,
    path: PathBuf,
    params: usize,
    slots: usize,
    nonce: u64,
    /// The creator removes the file when dropped.
    owner: bool,
}

/// A file the header or size of which does not fit.
fn shm_error(path: &Path, what: impl std::fmt::Display) -> ClusterError {
    ClusterError::Setup(format!("shared memory {}: {what}", path.display()))
}

/// A system call on the file failed.
fn shm_io(path: &Path) -> impl Fn(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        what: format!("shared memory {}", path.display()),
        source,
    }
}

fn random_u64() -> Result<u64, ClusterError> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|source| ClusterError::Io {
            what: "reading /dev/urandom".into(),
            source,
        })?;
    Ok(u64::from_le_bytes(b))
}

/// Removes the files of coordinators that are no longer running (killed before they could
/// remove their own), so a crash leaves nothing behind past the next run on the host.
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("siamese-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Bytes of a file for `params` weights and `slots` gradients; `None` past `usize`. Checked
/// because a worker computes it from another process's header, where a wrapped size would let
/// `write_gradient` past the mapping.
fn region_len(params: usize, slots: usize) -> Option<usize> {
    slots
        .checked_add(1)
        .and_then(|vectors| vectors.checked_mul(4))
        .and_then(|bytes| bytes.checked_mul(params))
        .and_then(|bytes| bytes.checked_add(HEADER))
}

/// The nonce, parameter count and slot count of a mapped file's bytes, once its magic and the
/// size its header implies (`region_len`) are checked.
pub fn parse_header(map: &[u8]) -> Result<(u64, usize, usize), String> {
    let len = map.len();
    if len < HEADER {
        return Err(format!("{len} bytes is too short"));
    }
    if map[..8] != MAGIC {
        return Err("not a siamese-cluster shared region".into());
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&map[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (nonce, params, slots) = (word(8), word(16), word(24));
    let fits = |n: u64| usize::try_from(n).ok();
    match (fits(params), fits(slots)) {
        (Some(params), Some(slots)) if region_len(params, slots) == Some(len) => {
            Ok((nonce, params, slots))
        }
        _ => Err(format!("{len} bytes does not fit its header")),
    }
}

impl SharedRegion {
    /// Creates a file for `params` weights and `slots` gradients, readable by this user only,
    /// in `/dev/shm` when the host has it (memory, not disk).
    pub fn create(params: usize, slots: usize) -> Result<Self, ClusterError> {
        let nonce = random_u64()?;
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        remove_orphans(&dir);
        let path = dir.join(format!("siamese-{}-{nonce:016x}", std::process::id()));
        let len = region_len(params, slots).ok_or_else(|| {
            shm_error(
                &path,
                format!("{params} values x {slots} slots is too large"),
            )
        })?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(shm_io(&path))?;
        file.set_len(len as u64).map_err(shm_io(&path))?;
        // SAFETY: the file was just created with a random name and mode 0600; only this run's
        // processes map it, and they follow the protocol in the module comment.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(shm_io(&path))?;
        map[..8].copy_from_slice(&MAGIC);
        map[8..16].copy_from_slice(&nonce.to_le_bytes());
        map[16..24].copy_from_slice(&(params as u64).to_le_bytes());
        map[24..32].copy_from_slice(&(slots as u64).to_le_bytes());
        let region = SharedRegion {
            map,
            path,
            params,
            slots,
            nonce,
            owner: true,
        };
        region.version().store(0, Ordering::Release);
        Ok(region)
    }

    /// Maps a file another process created, checking its header.
    pub fn open(path: &Path) -> Result<Self, ClusterError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(shm_io(path))?;
        let len = file.metadata().map_err(shm_io(path))?.len() as usize;
        if len < HEADER {
            return Err(shm_error(path, format!("{len} bytes is too short")));
        }
        // SAFETY: as in `create`; the header is checked before any other use.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(shm_io(path))?;
        let (nonce, params, slots) = parse_header(&map).map_err(|why| shm_error(path, why))?;
        Ok(SharedRegion {
            map,
            path: path.to_path_buf(),
            params,
            slots,
            nonce,
            owner: false,
        })
    }

    /// The file, for workers to open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random number a worker echoes to prove it mapped this very file.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Number of parameters the weights and each gradient hold.
    pub fn params(&self) -> usize {
        self.params
    }

    /// Number of gradient slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Removes the file's name; the mappings stay valid (the owner does it when dropped).
    pub fn unlink(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
            self.owner = false;
        }
    }

    fn version(&self) -> &AtomicU64 {
        // SAFETY: the map is page-aligned, so offset 32 is 8-byte aligned, and it lives as long
        // as `self`; other processes only touch this word atomically.
        unsafe { &*self.map.as_ptr().add(VERSION_AT).cast::<AtomicU64>() }
    }

    fn floats(&self, index: usize) -> &[f32] {
        let at = HEADER + index * self.params * 4;
        // SAFETY: `at` is 4-byte aligned (page-aligned base, 64-byte header, whole floats) and
        // `at + params * 4` is within the map (checked at create/open).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at).cast(), self.params) }
    }

    fn floats_mut(&mut self, index: usize) -> &mut [f32] {
        let at = HEADER + index * self.params * 4;
        // SAFETY: as in `floats`.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at).cast(), self.params) }
    }

    /// Publishes `weights` as `version` (coordinator).
    pub fn write_weights(&mut self, version: u64, weights: &[f32]) {
        self.version().store(WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        self.floats_mut(0).copy_from_slice(weights);
        self.version().store(version, Ordering::Release);
    }

    /// Copies the weights into `out` if they are whole and still at `version` (worker); `false`
    /// when the coordinator has moved on, in which case a newer `Weights` message is on its way.
    pub fn read_weights(&self, version: u64, out: &mut [f32]) -> bool {
        if self.version().load(Ordering::Acquire) != version {
            return false;
        }
        out.copy_from_slice(self.floats(0));
        fence(Ordering::Acquire);
        self.version().load(Ordering::Relaxed) == version
    }

    /// Writes a gradient into `slot` (worker), before it tells the coordinator by message.
    pub fn write_gradient(&mut self, slot: usize, grad: &[f32]) -> Result<(), ClusterError> {
        if slot >= self.slots || grad.len() != self.params {
            return Err(shm_error(
                &self.path,
                format!(
                    "no slot {slot} for {} values ({} slots of {})",
                    grad.len(),
                    self.slots,
                    self.params
                ),
            ));
        }
        self.floats_mut(1 + slot).copy_from_slice(grad);
        fence(Ordering::Release);
        Ok(())
    }

    /// The gradient in `slot` (coordinator), valid once its result message has arrived.
    pub fn gradient(&self, slot: usize) -> Option<&[f32]> {
        fence(Ordering::Acquire);
        (slot < self.slots).then(|| self.floats(1 + slot))
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        self.unlink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(params: u64, slots: u64) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        for word in [7, params, slots, 0] {
            h.extend_from_slice(&u64::to_le_bytes(word));
        }
        h.resize(HEADER, 0);
        h
    }

    #[test]
    fn a_header_whose_size_arithmetic_overflows_is_refused() {
        // (1 + slots) * 4 * params wraps to 0 in u64: a file of just the header would pass an
        // unchecked comparison.
        let mut wrapped = header(1 << 62, (1 << 62) - 1);
        assert!(parse_header(&wrapped).unwrap_err().contains("does not fit"));
        wrapped = header(1, u64::MAX);
        assert!(parse_header(&wrapped).unwrap_err().contains("does not fit"));
        let mut fits = header(2, 1);
        fits.resize(HEADER + 16, 0);
        assert_eq!(parse_header(&fits), Ok((7, 2, 1)));
    }

    #[test]
    fn a_second_mapping_sees_weights_and_gradients() {
        let mut owner = SharedRegion::create(5, 2).unwrap();
        let mut worker = SharedRegion::open(owner.path()).unwrap();
        assert_eq!(worker.nonce(), owner.nonce());
        assert_eq!((worker.params(), worker.slots()), (5, 2));
        owner.write_weights(3, &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut w = [0.0f32; 5];
        assert!(worker.read_weights(3, &mut w));
        assert_eq!(w, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(
            !worker.read_weights(2, &mut w),
            "a stale version must not read"
        );
        worker.write_gradient(1, &[0.5; 5]).unwrap();
        assert_eq!(owner.gradient(1).unwrap(), &[0.5; 5]);
        assert!(worker.write_gradient(2, &[0.5; 5]).is_err());
        assert!(worker.write_gradient(0, &[0.5; 4]).is_err());
        let path = owner.path().to_path_buf();
        drop(owner);
        assert!(!path.exists(), "the creator removes the file");
    }

    #[test]
    fn open_refuses_other_and_truncated_files() {
        let owner = SharedRegion::create(5, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut");
        let mut bytes = std::fs::read(owner.path()).unwrap();
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&cut, &bytes).unwrap();
        let err = SharedRegion::open(&cut).err().unwrap().to_string();
        assert!(err.contains("does not fit its header"), "{err}");
        let other = dir.path().join("junk");
        std::fs::write(&other, vec![7u8; 200]).unwrap();
        let err = SharedRegion::open(&other).err().unwrap().to_string();
        assert!(err.contains("not a siamese-cluster shared region"), "{err}");
    }
}
