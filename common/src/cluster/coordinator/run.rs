//! A whole cluster run on the coordinator: serve, start or await workers, train, stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::cluster_engine::ClusterEngine;
use super::links::Links;
use super::local_workers::{LocalWorkers, SpawnOptions};
use super::nccl_rendezvous::rendezvous;
use super::service::{Admission, CoordinatorService, serve};
use super::settings::{ClusterArgs, EngineSettings};
use crate::aggregation::Aggregation;
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::{TOKEN_ENV, generate_token};
use crate::cluster::protocol::shm::SharedRegion;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::results::RunResults;
use crate::stop::StopFlag;
use crate::train::{RunControl, TrainError, Trainer, TrainingData};

/// Trains `cfg` on `data` across a cluster of `args.workers` workers and writes the results
/// file and checkpoint; the same shape as [`crate::train::train_in_process`].
pub fn train_on_cluster(
    cfg: &TrainConfig,
    args: &ClusterArgs,
    data: TrainingData,
    control: RunControl<'_>,
) -> Result<RunResults, TrainError> {
    let dataset = data.dataset.clone();
    let stop = control.stop.clone();
    let mut trainer = Trainer::new(cfg.clone(), data);
    with_cluster(cfg, args, dataset, &stop, |engine| {
        trainer.run(engine, control)
    })
}

/// Serves the cluster, starts or awaits `args.workers` workers, runs `body` on this thread with
/// the engine that drives them, then stops the workers and the server. A raised `stop` ends
/// the wait for workers; `body` is expected to watch it too.
pub fn with_cluster<T>(
    cfg: &TrainConfig,
    args: &ClusterArgs,
    dataset: Arc<Dataset>,
    stop: &StopFlag,
    body: impl FnOnce(&mut ClusterEngine) -> Result<T, TrainError>,
) -> Result<T, TrainError> {
    if args.aggregation == Aggregation::Nccl && !args.no_spawn && args.device == "cpu" {
        return Err(TrainError::Config(
            "--aggregation nccl all-reduces on GPUs: give the local workers --device cuda:K (or use --aggregation allreduce on CPUs)".into(),
        ));
    }
    let token = match (&args.token, args.no_spawn) {
        (Some(t), _) => t.clone(),
        (None, false) => generate_token().map_err(|source| ClusterError::Io {
            what: "generating a token from /dev/urandom".into(),
            source,
        })?,
        (None, true) => {
            return Err(TrainError::Config(format!(
                "--no-spawn needs --token or {TOKEN_ENV} for the remote workers"
            )));
        }
    };
    // Two threads serve gRPC; the training step runs on the calling thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ClusterError::Io {
            what: "starting the async runtime".into(),
            source,
        })?;
    let listener = runtime
        .block_on(TcpListener::bind(args.listen))
        .map_err(|source| ClusterError::Io {
            what: format!("binding {}", args.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ClusterError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
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
        world_size: u32::try_from(args.workers)
            .map_err(|_| TrainError::Config(format!("--workers {} is too many", args.workers)))?,
        // Serialising these plain structs cannot fail.
        spec_json: serde_json::to_string(&spec).unwrap_or_default(),
        config_json: serde_json::to_string(&cfg).unwrap_or_default(),
        aggregation: args.aggregation,
        nccl_timeout_s: u32::try_from(args.nccl_timeout).unwrap_or(u32::MAX),
        shm: shm
            .as_ref()
            .map(|r| (r.path().display().to_string(), r.nonce())),
    };
    let (links_tx, mut links_rx) = mpsc::channel(args.workers.max(1));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = runtime.spawn({
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
        let opts = SpawnOptions {
            count: args.workers,
            coordinator: format!("http://{addr}"),
            token: &token,
            threads: cfg.threads_per_process(args.workers),
            data_dir: cfg.data_dir.as_deref(),
            device: &args.device,
        };
        Some(LocalWorkers::spawn(&opts)?)
    };

    let (dead_tx, mut dead_rx) = mpsc::channel::<String>(1);
    let watcher = local.as_ref().map(|w| {
        let pids = w.pids();
        runtime.spawn(async move {
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
    let settings = EngineSettings::from(args);
    let trained = (|| -> Result<T, TrainError> {
        let mut links = Links::admit(
            runtime.handle().clone(),
            (&mut links_rx, &mut dead_rx),
            args.workers,
            (settings.join_timeout, settings.step_timeout),
            stop,
        )?;
        if settings.aggregation == Aggregation::Nccl {
            rendezvous(&mut links, settings.nccl_timeout)?;
        }
        let mut engine = ClusterEngine::new(links, spec, settings, shm);
        let result = body(&mut engine);
        engine.stop(if result.is_ok() {
            "training finished"
        } else {
            "the run failed"
        });
        result
    })();
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(workers) = local {
        workers.finish(Duration::from_secs(10));
    }
    let _ = stop_tx.send(());
    match runtime.block_on(server) {
        Ok(Err(e)) => tracing::warn!("server: {e}"),
        Err(e) => tracing::warn!("server task: {e}"),
        Ok(Ok(())) => {}
    }
    trained
}
