//! A whole cluster run on the coordinator: serve, start or await workers, train, stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::aggregation::{Aggregation, EngineSettings};
use super::auth::{TOKEN_ENV, generate_token};
use super::shm::SharedRegion;
use super::spawn::{LocalWorkers, SpawnOptions};
use super::{Admission, ClusterEngine, CoordinatorService, serve};
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::results::{EpochRecord, RunResults};
use crate::train::{TrainError, Trainer, TrainingData};

/// The cluster's settings on the coordinator.
#[derive(clap::Args, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterArgs {
    /// Number of workers (0 trains in this process, without gRPC).
    #[arg(long, env = "SIAMESE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Wait for remote workers instead of starting them on this machine.
    #[arg(long)]
    pub no_spawn: bool,
    /// Address to serve on (default 127.0.0.1 with a free port; 0.0.0.0:50051 for remote workers).
    #[arg(long, env = "SIAMESE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Shared token every worker must present (generated for local workers when absent).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Device of the local workers: cpu, or cuda:K with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seconds to wait for all workers to join.
    #[arg(long, default_value_t = 120)]
    pub join_timeout: u64,
    /// Seconds to wait for any worker's answer to a task before the run stops.
    #[arg(long, default_value_t = 120)]
    pub step_timeout: u64,
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
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub digest_every: u64,
    /// NCCL runs: seconds the workers have to form the communicator.
    #[arg(long, default_value_t = 60)]
    pub nccl_timeout: u64,
}

/// Trains `cfg` on a cluster of `args.workers` workers; `on_epoch` sees every epoch's figures.
pub async fn train_on_cluster(
    cfg: TrainConfig,
    args: ClusterArgs,
    data: TrainingData,
    on_epoch: Box<dyn FnMut(&EpochRecord) + Send>,
) -> Result<RunResults, TrainError> {
    let dataset = data.dataset.clone();
    let run_cfg = cfg.clone();
    with_cluster(&cfg, &args, dataset, move |engine| {
        let mut on_epoch = on_epoch;
        Trainer::new(run_cfg, data).run(engine, &mut *on_epoch)
    })
    .await
}

/// Serves the cluster, starts or awaits `args.workers` workers, runs `body` with the engine that
/// drives them (on a blocking thread), then stops the workers and the server.
pub async fn with_cluster<T: Send + 'static>(
    cfg: &TrainConfig,
    args: &ClusterArgs,
    dataset: Arc<Dataset>,
    body: impl FnOnce(&mut ClusterEngine) -> Result<T, TrainError> + Send + 'static,
) -> Result<T, TrainError> {
    if args.aggregation == Aggregation::Nccl && !args.no_spawn && args.device == "cpu" {
        return Err(TrainError::Config(
            "--aggregation nccl all-reduces on GPUs: give the local workers --device cuda:K (or use --aggregation allreduce on CPUs)".into(),
        ));
    }
    let token = match (&args.token, args.no_spawn) {
        (Some(t), _) => t.clone(),
        (None, false) => {
            generate_token().map_err(|e| TrainError::Engine(format!("generating a token: {e}")))?
        }
        (None, true) => {
            return Err(TrainError::Config(format!(
                "--no-spawn needs --token or {TOKEN_ENV} for the remote workers"
            )));
        }
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| TrainError::Engine(format!("binding {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| TrainError::Engine(format!("reading the bound address: {e}")))?;
    let spec = ModelSpec::siamese(dataset.kind, cfg.embedding as usize);
    let shm = match args.no_shm {
        true => None,
        false => SharedRegion::create(spec.num_params(), args.workers)
            .inspect_err(|e| tracing::warn!("no shared memory, all payloads go through gRPC: {e}"))
            .ok(),
    };
    let admission = Admission {
        dataset: dataset.kind.name().into(),
        digest: dataset.digest(),
        world_size: args.workers as u32,
        spec_json: serde_json::to_string(&spec).map_err(|e| TrainError::Engine(e.to_string()))?,
        config_json: serde_json::to_string(&cfg).map_err(|e| TrainError::Engine(e.to_string()))?,
        aggregation: args.aggregation,
        nccl_timeout_s: args.nccl_timeout as u32,
        shm: shm
            .as_ref()
            .map(|r| (r.path().display().to_string(), r.nonce())),
    };
    let (links_tx, mut links_rx) = mpsc::channel(args.workers.max(1));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let token = token.clone();
        async move {
            serve(
                listener,
                CoordinatorService::new(admission, links_tx),
                &token,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        }
    });
    tracing::info!(%addr, workers = args.workers, "coordinator serving");
    if let Some(path) = &args.address_file {
        std::fs::write(path, addr.to_string()).map_err(|e| TrainError::Io {
            path: path.clone(),
            source: e,
        })?;
    }

    let local = if args.no_spawn {
        None
    } else {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = cfg
            .threads
            .unwrap_or_else(|| (cores / args.workers.max(1)).max(1));
        let opts = SpawnOptions {
            count: args.workers,
            coordinator: format!("http://{addr}"),
            token: &token,
            threads,
            data_dir: cfg.data_dir.as_deref(),
            device: &args.device,
        };
        Some(LocalWorkers::spawn(&opts)?)
    };

    let (dead_tx, mut dead_rx) = mpsc::channel::<String>(1);
    let watcher = local.as_ref().map(|w| {
        let pids = w.pids();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(pid) = LocalWorkers::first_exited(&pids) {
                    let _ = dead_tx
                        .send(format!("local worker process {pid} exited"))
                        .await;
                    return;
                }
            }
        })
    });
    let handle = tokio::runtime::Handle::current();
    let settings = EngineSettings {
        join_timeout: Duration::from_secs(args.join_timeout),
        step_timeout: Duration::from_secs(args.step_timeout),
        aggregation: args.aggregation,
        digest_every: args.digest_every,
        nccl_timeout: Duration::from_secs(args.nccl_timeout),
    };
    let world = args.workers;
    let trained = tokio::task::spawn_blocking(move || -> Result<T, TrainError> {
        let mut engine = ClusterEngine::admit(
            handle,
            (&mut links_rx, &mut dead_rx),
            world,
            spec,
            settings,
            shm,
        )?;
        let result = body(&mut engine);
        engine.stop(if result.is_ok() {
            "training finished"
        } else {
            "the run failed"
        });
        result
    })
    .await
    .map_err(|e| TrainError::Engine(format!("the training thread failed: {e}")))?;
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(workers) = local {
        workers.finish(Duration::from_secs(10));
    }
    let _ = stop_tx.send(());
    match server.await {
        Ok(Err(e)) => tracing::warn!("server: {e}"),
        Err(e) => tracing::warn!("server task: {e}"),
        Ok(Ok(())) => {}
    }
    trained
}
