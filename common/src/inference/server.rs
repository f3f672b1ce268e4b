//! Serving the inference service: the `Inference` service behind the run token, with the
//! standard health service and server reflection open (as on the cluster), until SIGTERM or
//! SIGINT. Transport settings live in [`transport`] alone, so TLS is added in one place.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use super::InferenceError;
use super::proto::FILE_DESCRIPTOR_SET;
use super::proto::inference_server::InferenceServer;
use super::service::InferenceService;
use crate::cluster::protocol::auth::CheckToken;
use crate::stop::StopFlag;

/// The health service's name for this service.
pub const SERVICE_NAME: &str = "siamese.inference.v1.Inference";

/// How the server listens and whom it answers.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The token every call must carry; `None` serves everyone (`--no-auth`).
    pub token: Option<String>,
    /// HTTP/2 keepalive PING interval; a client that misses two is dropped.
    pub keepalive: Duration,
    /// Where to write the bound address once serving (for scripts and tests).
    pub address_file: Option<PathBuf>,
    /// Threads decoding requests (the forward passes run on the batcher's own threads).
    pub io_threads: usize,
}

/// The transport, configured in this one place: TLS goes here (`Server::tls_config`).
fn transport(opts: &ServeOptions) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(opts.keepalive))
        .http2_keepalive_timeout(Some(2 * opts.keepalive))
        .tcp_nodelay(true)
}

/// Refuses calls without the token (when there is one), with a message for inference clients.
#[derive(Clone)]
struct Bearer(Option<CheckToken>);

impl Interceptor for Bearer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match &mut self.0 {
            None => Ok(req),
            // The cluster's comparison (constant time); its message speaks to workers.
            Some(check) => check.call(req).map_err(|_| {
                Status::unauthenticated(
                    "missing or wrong token: send `authorization: Bearer <token>` with the server's --token / SIAMESE_TOKEN",
                )
            }),
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: InferenceService,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InferenceError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| InferenceError::Server(format!("building the reflection service: {e}")))?;
    let auth = Bearer(opts.token.as_deref().map(CheckToken::new));
    transport(opts)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            InferenceServer::new(service),
            auth,
        ))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| InferenceError::Server(format!("{}: {e}", opts.listen)))
}

/// Binds, serves until `stop` is raised (SIGTERM, SIGINT), and logs how batching went.
pub fn serve_blocking(
    opts: ServeOptions,
    service: InferenceService,
    stop: &StopFlag,
) -> Result<(), InferenceError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.io_threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| InferenceError::Server(format!("starting the async runtime: {e}")))?;
    let listener = runtime
        .block_on(TcpListener::bind(opts.listen))
        .map_err(|e| InferenceError::Server(format!("binding {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| InferenceError::Server(format!("reading the bound address: {e}")))?;
    tracing::info!(%addr, auth = opts.token.is_some(), "inference server listening");
    if let Some(path) = &opts.address_file {
        crate::atomic_file::write_atomically(path, addr.to_string().as_bytes()).map_err(
            |source| InferenceError::Io {
                path: path.clone(),
                source,
            },
        )?;
    }
    let stats = service.batcher().clone();
    let stop = stop.clone();
    let served = runtime.block_on(serve(listener, service, &opts, async move {
        while !stop.requested() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    let s = stats.stats();
    let (passes, requests, images) = (
        s.passes.load(std::sync::atomic::Ordering::Relaxed),
        s.requests.load(std::sync::atomic::Ordering::Relaxed),
        s.images.load(std::sync::atomic::Ordering::Relaxed),
    );
    tracing::info!(
        passes,
        requests,
        images,
        mean_requests_per_pass = requests as f64 / passes.max(1) as f64,
        "inference server stopped"
    );
    served
}
