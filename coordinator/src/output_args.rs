//! How the coordinator talks: `--quiet` and `--log-format`, for every command.

use siamese_common::logging::{LOG_FORMAT_ENV, LogFormat};

/// Output flags shared by every command.
#[derive(clap::Args, Clone, Debug)]
pub struct OutputArgs {
    /// Print nothing on stdout and log only warnings and errors (RUST_LOG still decides).
    #[arg(long, short, global = true, env = "SIAMESE_QUIET")]
    pub quiet: bool,
    /// Log (and, for training runs, report progress) as text or as one JSON object per line,
    /// what Kubernetes log pipelines read; RUST_LOG filters the log.
    #[arg(long, value_enum, global = true, env = LOG_FORMAT_ENV, default_value = "text")]
    pub log_format: LogFormat,
}

impl OutputArgs {
    /// The log level where RUST_LOG is unset.
    pub fn default_level(&self) -> &'static str {
        if self.quiet { "warn" } else { "info" }
    }
}
