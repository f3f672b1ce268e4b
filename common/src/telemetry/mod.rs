//! Prometheus metrics of a training run and of a worker, and the HTTP endpoint that serves them
//! (`--metrics-listen ADDR`, `GET /metrics`, OpenMetrics text). The names and what each means
//! are listed in docs/operations.md.

mod http;
mod training;
mod worker;

pub use http::{METRICS_PATH, MetricsServer};

/// Environment variable of `--metrics-listen` on both binaries.
pub const METRICS_LISTEN_ENV: &str = "SIAMESE_METRICS_LISTEN";
pub use training::TrainingMetrics;
pub use worker::WorkerMetrics;

/// What can go wrong serving metrics.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The metrics address could not be bound.
    #[error("serving metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The thread or runtime of the metrics server could not start.
    #[error("starting the metrics server: {0}")]
    Start(std::io::Error),
}

/// Encodes a registry in the OpenMetrics text format.
fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
