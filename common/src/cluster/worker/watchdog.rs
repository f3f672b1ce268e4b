//! Ends this worker when an NCCL call outlives its limit.

/// Ends this worker when an NCCL call outlives its limit. A rank whose peer died blocks inside
/// the all-reduce forever and cannot even read the coordinator's Stop; exiting (which tears
/// the communicator down) is the one way out that needs no cooperation from the stuck thread.
pub struct Watchdog {
    /// Milliseconds since `epoch` when the current call started; 0 when none is running.
    started: std::sync::Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

impl Watchdog {
    /// Starts the watching thread for calls limited to `limit`.
    pub fn start(limit: std::time::Duration) -> Self {
        use std::sync::atomic::Ordering;
        let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let epoch = std::time::Instant::now();
        let watched = started.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let at = watched.load(Ordering::Acquire);
                let now = epoch.elapsed().as_millis() as u64;
                if at != 0 && now.saturating_sub(at) > limit.as_millis() as u64 {
                    tracing::error!(
                        limit_s = limit.as_secs(),
                        "an NCCL all-reduce did not finish in time: a peer is gone; exiting"
                    );
                    eprintln!(
                        "error: an NCCL all-reduce did not finish within {} s: a peer rank is gone",
                        limit.as_secs()
                    );
                    std::process::exit(3);
                }
            }
        });
        Watchdog { started, epoch }
    }

    /// Marks the start of an NCCL call.
    pub(super) fn arm(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.started
            .store(now.max(1), std::sync::atomic::Ordering::Release);
    }

    /// Marks its end.
    pub(super) fn disarm(&self) {
        self.started.store(0, std::sync::atomic::Ordering::Release);
    }
}
