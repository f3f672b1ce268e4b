//! A whole cluster run on the coordinator: serve, start or await workers, train, stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::admission::Admission;
use super::cluster_engine::ClusterEngine;
use super::events::Event;
use super::local_workers::{LocalWorkers, SpawnOptions};
use super::pool::{OnLost, PoolSettings, SLOTS_PER_WORKER, WorkerPool};
use super::rank_table::RankTable;
use super::service::{CoordinatorService, ServerLimits, serve};
use super::settings::{ClusterArgs, EngineSettings};
use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::generate_token;
use crate::cluster::protocol::shm::SharedRegion;
use crate::cluster::protocol::tls::ServerTls;
use crate::cluster::protocol::transport::message_limit;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::results::RunResults;
use crate::stop::StopFlag;
use crate::train::{RunControl, TrainError, Trainer, TrainingData};

/// How long open connections may take to close once the run has ended.
const SERVER_GRACE: Duration = Duration::from_secs(5);

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
    let mut trainer = Trainer::start(cfg.clone(), data)?;
    with_cluster(cfg, args, dataset, &stop, |engine| {
        trainer.run(engine, control)
    })
}

/// Where local workers reach this coordinator: its port on 127.0.0.1 when it listens on every
/// address.
fn local_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let host = match addr.ip().is_unspecified() {
        true => std::net::IpAddr::from([127, 0, 0, 1]),
        false => addr.ip(),
    };
    let scheme = if tls { "https" } else { "http" };
    format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(host, addr.port())
    )
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
    args.check_flags()?;
    let token = match args.given_token()? {
        Some(t) => t,
        // Only local workers get here without one (given_token refuses --no-spawn).
        None => generate_token().map_err(|source| ClusterError::Io {
            what: "generating a token from /dev/urandom".into(),
            source,
        })?,
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
    let tls = ServerTls::from_args(&args.tls)?;
    if tls.is_none() && !args.listen.ip().is_loopback() {
        let warning = format!(
            "listening on {} WITHOUT TLS: the token and all training data cross the network in plaintext; give --tls-cert and --tls-key",
            args.listen
        );
        tracing::warn!("{warning}");
        eprintln!("warning: {warning}");
    }
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
    // Room for every worker's slots twice: replacements get fresh ones.
    let slots = 2 * SLOTS_PER_WORKER * args.workers;
    let shm = match args.no_shm {
        true => None,
        false => SharedRegion::create(spec.num_params(), slots)
            .inspect_err(|e| tracing::warn!("no shared memory, all payloads go through gRPC: {e}"))
            .ok(),
    };
    let admission = Admission {
        data: dataset.clone(),
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
    let ranks = RankTable::new(args.workers);
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = ServerLimits {
        keepalive: Duration::from_secs(args.keepalive),
        message_bytes: message_limit(&spec, cfg.batch_size as usize),
        // Every worker's session and its short calls, replacements joining, probes.
        calls: 4 * args.workers + 32,
    };
    let server = runtime.spawn({
        let token = token.clone();
        let service = CoordinatorService::new(admission, ranks.clone(), events_tx.clone());
        let tls = tls.clone();
        async move {
            serve(listener, service, (&token, tls.as_ref()), limits, async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    tracing::info!(%addr, workers = args.workers, "coordinator serving");
    if let Some(path) = &args.address_file {
        crate::atomic_file::write_atomically(path, addr.to_string().as_bytes()).map_err(|e| {
            TrainError::Io {
                path: path.clone(),
                source: e,
            }
        })?;
    }

    let local = match args.no_spawn {
        true => None,
        false => Some(Arc::new(Mutex::new(LocalWorkers::spawn(SpawnOptions {
            count: args.workers,
            coordinator: local_url(addr, tls.is_some()),
            tls_ca: args.tls_ca.clone(),
            token: token.clone(),
            threads: cfg.threads_per_process(args.workers),
            data_dir: cfg.data_dir.clone(),
            device: args.device.clone(),
            keepalive: args.keepalive,
        })?))),
    };
    // Exits of local worker processes reach the engine like any other event.
    let watcher = local.clone().map(|local| {
        let events = events_tx.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let exited = local.lock().unwrap_or_else(|e| e.into_inner()).exited();
                for what in exited {
                    if events.send(Event::ProcessExited(what)).await.is_err() {
                        return;
                    }
                }
            }
        })
    });
    drop(events_tx);
    let settings = EngineSettings::from(args);
    let pool_settings = PoolSettings {
        step_timeout: settings.step_timeout,
        join_timeout: settings.join_timeout,
        min_workers: args.min_workers,
    };
    let mut pool = WorkerPool::new(
        runtime.handle().clone(),
        events_rx,
        ranks,
        pool_settings,
        slots,
        stop.clone(),
    );
    if let Some(local) = &local {
        let (local, respawn) = (local.clone(), args.respawn);
        let on_lost: OnLost = Arc::new(Mutex::new(move |pid: u32| {
            let mut local = local.lock().unwrap_or_else(|e| e.into_inner());
            local.kill(pid);
            match respawn {
                true => local.respawn(),
                false => Ok(()),
            }
        }));
        pool.on_lost(on_lost, args.respawn);
    }
    let micro = cfg.micro_batch as usize;
    let mut engine = ClusterEngine::new(pool, spec, settings, (args.workers, micro), shm);
    let trained = body(&mut engine);
    engine.stop(&match &trained {
        Ok(_) => Ok(()),
        Err(TrainError::Interrupted) => Err("interrupted".to_string()),
        Err(e) => Err(e.to_string()),
    });
    drop(engine);
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(local) = local
        && let Ok(local) = Arc::try_unwrap(local)
    {
        local
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .finish(Duration::from_secs(10));
    }
    let _ = stop_tx.send(());
    // A graceful shutdown waits for every open stream; a peer that stopped reading would hold
    // the coordinator's exit (and its exit code) hostage, so it gets a bounded grace.
    let abort = server.abort_handle();
    match runtime.block_on(async { tokio::time::timeout(SERVER_GRACE, server).await }) {
        Ok(Ok(Err(e))) => tracing::warn!("server: {e}"),
        Ok(Err(e)) => tracing::warn!("server task: {e}"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            tracing::warn!(
                grace_s = SERVER_GRACE.as_secs(),
                "connections still open after the run ended; closing them"
            );
            abort.abort();
        }
    }
    trained
}
