//! The C allocator's settings for a training process: keep freed memory for the next step
//! instead of handing it back to the kernel.
//!
//! Why: every step allocates and frees the same few megabytes (activations, the 247 KB weight
//! and gradient vectors, gRPC's receive and send buffers). With glibc's defaults, blocks above
//! the mmap threshold (128 KiB, raised only by some frees) are mapped and unmapped each time,
//! and a free leaving more than the trim threshold at the top of an arena gives those pages back;
//! either way the next step faults every page in again and the kernel zeroes it. Measured on the
//! development machine (docs/benchmarks.md, issue 13, part 3): about 950 page faults a step per
//! worker and 1.5 ms of its system time, gone with the two thresholds below (RSS unchanged).

/// Blocks below this size come from the arenas (and are reused), not from their own mapping.
pub const MMAP_THRESHOLD_BYTES: i32 = 16 << 20;
/// Free memory an arena keeps at its top before giving any back.
pub const TRIM_THRESHOLD_BYTES: i32 = 64 << 20;

/// Sets the thresholds (glibc only; elsewhere nothing to do). Returns whether they were set.
///
/// Call it first thing in `main`: it applies to every allocation after it.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; it is called before any other
        // thread exists, and a rejected value leaves the default (mallopt returns 0).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_thresholds() {
        assert!(super::keep_freed_memory());
    }
}
