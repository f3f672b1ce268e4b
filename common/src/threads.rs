//! Compute-thread settings that must be fixed before any thread starts.

/// Pins Candle's and rayon's global thread counts to `threads`.
///
/// Candle 0.11 keeps its own pool of helper threads (sized by `CANDLE_NUM_THREADS`, else all
/// cores) that spin after every operation; with several workers on one machine those spinning
/// threads take cores from the workers' compute. Unset, they would also size rayon's global pool
/// to all cores, whatever `--threads` says.
///
/// # Safety
/// Must be called before the process starts any other thread (it sets environment variables).
pub unsafe fn pin_compute_threads(threads: usize) {
    let n = threads.max(1).to_string();
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: the caller guarantees no other thread exists yet.
            unsafe { std::env::set_var(var, &n) };
        }
    }
}
