//! The `/metrics` endpoint: a small HTTP/1 server (axum, already in the build through tonic) on
//! its own thread and runtime, so that it answers whatever the training thread is doing and a
//! process without a runtime of its own (`--workers 0`, a worker) can serve it too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;

use super::TelemetryError;

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// OpenMetrics 1.0 text, which Prometheus asks for first and `prometheus-client` writes.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the current metrics as text, on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A running metrics endpoint; dropping it stops the server.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free one) and serves `render`'s text at `/metrics`.
    pub fn start(addr: SocketAddr, render: Render) -> Result<Self, TelemetryError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| TelemetryError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TelemetryError::Start)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("metrics server: {e}");
                            return;
                        }
                    };
                    let app = axum::Router::new().route(
                        METRICS_PATH,
                        axum::routing::get(move || {
                            let render = render.clone();
                            async move { ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], render()) }
                        }),
                    );
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("metrics server: {e}");
                    }
                });
            })
            .map_err(TelemetryError::Start)?;
        tracing::info!(addr = %bound, path = METRICS_PATH, "serving metrics");
        Ok(MetricsServer {
            addr: bound,
            stop: Some(stop),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    /// Stops serving; a scrape in flight finishes on the server's thread, which is not waited
    /// for (the process is usually about to exit).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
