//! TLS on the cluster's connections (rustls, through tonic): the coordinator's certificate and,
//! for mutual TLS, the CA its workers' client certificates must chain to; on the worker, the CA
//! the coordinator's certificate must chain to and its own client certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::cluster::ClusterError;

/// Reads the PEM file a flag names, naming both when it cannot.
pub fn pem(flag: &str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    let bytes = std::fs::read(path).map_err(|source| ClusterError::Io {
        what: format!("reading {flag} {}", path.display()),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ClusterError::Setup(format!(
            "{flag} {} is not a PEM file (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A certificate and its private key, given as a pair of flags.
fn identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Identity>, ClusterError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(
            pem("--tls-cert", cert)?,
            pem("--tls-key", key)?,
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ClusterError::Setup(
            "--tls-cert needs --tls-key, the certificate's private key".into(),
        )),
        (None, Some(_)) => Err(ClusterError::Setup(
            "--tls-key needs --tls-cert, the certificate it belongs to".into(),
        )),
    }
}

/// The TLS flags of a server (the coordinator's cluster, and the inference service): one
/// declaration, so both read the same flags and environment variables.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerTlsArgs {
    /// TLS: the server's certificate (PEM); with --tls-key every connection is TLS (workers
    /// connect to https://). Without it, traffic, the token included, is plaintext.
    #[arg(long, env = "SIAMESE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "SIAMESE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients (workers, or callers of the service) must show a certificate issued
    /// by this CA (PEM).
    #[arg(long, env = "SIAMESE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

/// The coordinator's TLS settings.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: ServerTlsConfig,
    /// Whether workers must show a client certificate (mutual TLS).
    pub mutual: bool,
}

impl ServerTls {
    /// Loads `--tls-cert` and `--tls-key` and, for mutual TLS, `--tls-client-ca`; `None` when
    /// no certificate is given.
    pub fn from_args(args: &ServerTlsArgs) -> Result<Option<Self>, ClusterError> {
        let (cert, key) = (args.tls_cert.as_deref(), args.tls_key.as_deref());
        let client_ca = args.tls_client_ca.as_deref();
        let Some(identity) = identity(cert, key)? else {
            return match client_ca {
                Some(_) => Err(ClusterError::Setup(
                    "--tls-client-ca needs the coordinator's own --tls-cert and --tls-key".into(),
                )),
                None => Ok(None),
            };
        };
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = client_ca {
            config = config.client_ca_root(Certificate::from_pem(pem("--tls-client-ca", ca)?));
        }
        Ok(Some(ServerTls {
            config,
            mutual: client_ca.is_some(),
        }))
    }

    /// The configuration for tonic's server.
    pub fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

/// A worker's TLS settings for an `https://` coordinator.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl ClientTls {
    /// Loads `--tls-ca` (else the system's roots), the client certificate for mutual TLS
    /// (`--tls-cert`, `--tls-key`), and the name the coordinator's certificate must carry when
    /// it is not the URL's host (`--tls-domain`).
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        domain: Option<&str>,
    ) -> Result<Self, ClusterError> {
        let mut config = ClientTlsConfig::new();
        config = match ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(pem("--tls-ca", ca)?)),
            None => config.with_native_roots(),
        };
        if let Some(identity) = identity(cert, key)? {
            config = config.identity(identity);
        }
        if let Some(domain) = domain {
            config = config.domain_name(domain);
        }
        Ok(ClientTls { config })
    }

    /// The configuration for tonic's endpoint.
    pub fn config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

/// Whether an error chain holds a TLS failure (a certificate refused either way, a plaintext
/// peer): retrying will not fix it.
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // An io::Error's source() skips the error it wraps: look inside it too.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}
