//! A request to stop a run early (SIGINT or SIGTERM), checked by the training loop between
//! steps so that a run ends at a step boundary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared "please stop" flag; clones see the same flag.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag nobody has raised yet.
    pub fn new() -> Self {
        StopFlag::default()
    }

    /// A flag raised by SIGINT or SIGTERM. A second SIGINT ends the process at once with status
    /// 130, for a user who does not want to wait for the step to finish. A second SIGTERM does
    /// not: schedulers send it more than once (Slurm signals every process of a job, and the
    /// batch script forwards its own), and SIGKILL is theirs for "now".
    pub fn on_signals() -> std::io::Result<Self> {
        let flag = StopFlag::new();
        // Registered first, so it sees the flag as it was before this signal's own handler.
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            130,
            flag.0.clone(),
        )?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, flag.0.clone())?;
        }
        Ok(flag)
    }

    /// Raises the flag.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the run was asked to stop.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
