//! How many compute threads a process takes, and the settings that must be fixed before any
//! thread starts.

/// Compute threads of each of `processes` processes sharing this machine: its cores split
/// evenly, at least one each. The one default for `--threads` everywhere.
pub fn default_threads(processes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / processes.max(1)).max(1)
}

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
