//! The coordinator's cluster flags, and the limits its engine works within.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::aggregation::Aggregation;
use crate::cluster::protocol::auth::{TOKEN_ENV, TOKEN_FILE_ENV, resolve_token};
use crate::cluster::protocol::tls::{ServerTls, ServerTlsArgs, pem};
use crate::config::{at_least, within};
use crate::train::TrainError;

/// The cluster's settings on the coordinator.
#[derive(clap::Args, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterArgs {
    /// Number of workers, 0 to 1024 (0 trains in this process, without gRPC).
    #[arg(long, env = "SIAMESE_WORKERS", default_value_t = 1, value_parser = within(0usize, 1024))]
    pub workers: usize,
    /// Wait for remote workers instead of starting them on this machine.
    #[arg(long)]
    pub no_spawn: bool,
    /// Address to serve on (default 127.0.0.1 with a free port; 0.0.0.0:50051 for remote workers).
    #[arg(long, env = "SIAMESE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Shared token every worker must present (generated for local workers when absent);
    /// prefer SIAMESE_TOKEN or --token-file, which `ps` does not show.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    #[serde(skip)]
    pub token: Option<String>,
    /// File holding the token (a mounted Secret, say), instead of --token.
    #[arg(long, env = TOKEN_FILE_ENV)]
    pub token_file: Option<PathBuf>,
    /// The server's TLS flags (--tls-cert, --tls-key, --tls-client-ca).
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: ServerTlsArgs,
    /// TLS with local workers: the CA that issued --tls-cert, which they are told to trust (the
    /// certificate must name 127.0.0.1, where they connect).
    #[arg(long, env = "SIAMESE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Device of the local workers: cpu, or cuda:K with the `cuda` feature.
    #[arg(long, env = "SIAMESE_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Seconds (1 to 86400) to wait for all workers to join at the start, and for replacements when fewer
    /// than --min-workers remain.
    #[arg(long, env = "SIAMESE_JOIN_TIMEOUT", default_value_t = 120, value_parser = within(1u64, 86_400))]
    pub join_timeout: u64,
    /// Seconds (1 to 86400) a worker has to answer a task; one that does not is declared lost and its share
    /// recomputed by the others.
    #[arg(long, env = "SIAMESE_STEP_TIMEOUT", default_value_t = 120, value_parser = within(1u64, 86_400))]
    pub step_timeout: u64,
    /// The run goes on while at least this many workers (1 to 1024) remain; below it, it waits up to
    /// --join-timeout for replacements, then stops (its checkpoint keeps everything).
    #[arg(long, env = "SIAMESE_MIN_WORKERS", default_value_t = 1, value_parser = within(1usize, 1024))]
    pub min_workers: usize,
    /// Start a new local worker whenever one is lost (not with --no-spawn).
    #[arg(long, env = "SIAMESE_RESPAWN")]
    pub respawn: bool,
    /// Seconds (1 to 3600) between HTTP/2 keepalive PINGs; a worker that misses two in a row (a vanished
    /// host, a stopped process) is declared lost.
    #[arg(long, env = "SIAMESE_KEEPALIVE", default_value_t = 3, value_parser = within(1u64, 3600))]
    pub keepalive: u64,
    /// Write the bound address (host:port) to this file once serving (for scripts and tests).
    #[arg(long)]
    pub address_file: Option<PathBuf>,
    /// Send weights and gradients through gRPC even to workers on this host (by default they go
    /// through a shared-memory file and gRPC carries only control messages).
    #[arg(long, env = "SIAMESE_NO_SHM")]
    pub no_shm: bool,
    /// Where gradients meet: the coordinator sums them and every replica steps Adam on the
    /// mean (allreduce, the default: fastest measured), the coordinator steps the one Adam and
    /// sends weights (coordinator), or CUDA workers all-reduce through NCCL and step Adam
    /// themselves (nccl; the coordinator relays the NCCL id).
    #[arg(
        long,
        value_enum,
        env = "SIAMESE_AGGREGATION",
        default_value = "allreduce"
    )]
    pub aggregation: Aggregation,
    /// Replicated runs: compare the replicas' weight digests every this many steps (and at
    /// the end of every epoch).
    #[arg(long, env = "SIAMESE_DIGEST_EVERY", default_value_t = 100, value_parser = at_least(1u64))]
    pub digest_every: u64,
    /// NCCL runs: seconds (1 to 86400) the workers have to form the communicator.
    #[arg(long, env = "SIAMESE_NCCL_TIMEOUT", default_value_t = 60, value_parser = within(1u64, 86_400))]
    pub nccl_timeout: u64,
}

impl ClusterArgs {
    /// Refuses cluster flags that cannot work, and a token that cannot be had, before
    /// anything starts (the data load included), naming them.
    pub fn check(&self) -> Result<(), TrainError> {
        self.check_flags()?;
        // Read now only to fail early: the run reads them again when it starts the server
        // (the token and the server's certificates) and the local workers (--tls-ca).
        self.given_token()?;
        ServerTls::from_args(&self.tls)?;
        if let Some(ca) = &self.tls_ca {
            pem("--tls-ca", ca)?;
        }
        Ok(())
    }

    /// The flags' checks alone, without reading a token file.
    pub(super) fn check_flags(&self) -> Result<(), TrainError> {
        let bad = |what: String| Err(TrainError::Config(what));
        if self.aggregation == Aggregation::Nccl && !self.no_spawn && self.device == "cpu" {
            return bad("--aggregation nccl all-reduces on GPUs: give the local workers --device cuda:K (or use --aggregation allreduce on CPUs)".into());
        }
        if self.min_workers == 0 || self.min_workers > self.workers {
            return bad(format!(
                "--min-workers {} must be between 1 and --workers {}",
                self.min_workers, self.workers
            ));
        }
        if self.respawn && self.no_spawn {
            return bad("--respawn starts local workers; it cannot go with --no-spawn".into());
        }
        if self.keepalive == 0 {
            return bad("--keepalive must be at least 1 second".into());
        }
        let tls = self.tls.tls_cert.is_some();
        if tls && !self.no_spawn && self.workers > 0 && self.tls_ca.is_none() {
            return bad("TLS with local workers needs --tls-ca, the CA that issued --tls-cert, for them to trust (or start the workers yourself with --no-spawn)".into());
        }
        if self.tls.tls_client_ca.is_some() && !self.no_spawn {
            return bad("mutual TLS (--tls-client-ca) needs a client certificate for every worker: start them yourself with --no-spawn".into());
        }
        Ok(())
    }

    /// The token from the flag or the file, if any; refused when remote workers would need
    /// one and none is given (local ones get a generated token).
    pub fn given_token(&self) -> Result<Option<String>, TrainError> {
        match resolve_token(self.token.as_deref(), self.token_file.as_deref())? {
            None if self.no_spawn => Err(TrainError::Config(format!(
                "--no-spawn needs a token for the remote workers: {TOKEN_ENV}, --token-file or --token"
            ))),
            token => Ok(token),
        }
    }
}

/// The engine's choices and limits, read once from [`ClusterArgs`].
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    /// How long all workers have to join.
    pub join_timeout: Duration,
    /// How long any worker has to answer a task.
    pub step_timeout: Duration,
    /// Where gradients meet.
    pub aggregation: Aggregation,
    /// Replicated runs: compare the replicas' weight digests every this many steps.
    pub digest_every: u64,
    /// NCCL runs: how long the communicator has to form.
    pub nccl_timeout: Duration,
}

impl From<&ClusterArgs> for EngineSettings {
    fn from(args: &ClusterArgs) -> Self {
        EngineSettings {
            join_timeout: Duration::from_secs(args.join_timeout),
            step_timeout: Duration::from_secs(args.step_timeout),
            aggregation: args.aggregation,
            digest_every: args.digest_every,
            nccl_timeout: Duration::from_secs(args.nccl_timeout),
        }
    }
}
