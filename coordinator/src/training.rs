//! A training run as the `coordinator` command runs it: the library's run, watched by the
//! progress display, the Prometheus metrics and the scores file, then the curves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::console::Console;
use crate::curves::{curves_path, write_curves};
use crate::progress::Progress;
use crate::scores_file::ScoresFile;
use siamese_common::cluster::{ClusterArgs, train_on_cluster};
use siamese_common::config::TrainConfig;
use siamese_common::data::obtain_dataset;
use siamese_common::stop::StopFlag;
use siamese_common::telemetry::{METRICS_LISTEN_ENV, MetricsServer, TrainingMetrics};
use siamese_common::train::output_files::{OutputFile, check_output_files};
use siamese_common::train::{
    Observers, RunControl, RunObserver, TrainError, TrainingData, train_in_process,
};

/// What a training run writes and serves besides its results file and checkpoint.
#[derive(clap::Args, Clone, Debug, serde::Serialize)]
pub struct RunOutputArgs {
    /// Serve Prometheus metrics of the run (steps, epoch, pairs/s, loss, accuracy, workers,
    /// step-time split, checkpoint age) at http://ADDR/metrics, e.g. 0.0.0.0:9100.
    #[arg(long, env = METRICS_LISTEN_ENV)]
    pub metrics_listen: Option<SocketAddr>,
    /// Also write every test pair's indices, label and similarity as CSV to this file.
    #[arg(long, env = "SIAMESE_SCORES")]
    pub scores: Option<PathBuf>,
    /// Start afresh where the run's checkpoint file already exists, replacing it at the first
    /// checkpoint. Without it such a run is refused (give --resume auto to continue it), so that
    /// a job restarted without --resume cannot write over the progress it would continue.
    #[arg(long, env = "SIAMESE_OVERWRITE")]
    pub overwrite: bool,
}

/// Trains as the flags say, reporting on `console`.
pub fn train(
    cfg: TrainConfig,
    cluster: &ClusterArgs,
    outputs: &RunOutputArgs,
    console: &Console,
    stop: StopFlag,
) -> anyhow::Result<()> {
    // On the flags as given: resolving names the results file after the clock.
    cfg.resume_from()?;
    let cfg = cfg.resolved(cluster.workers.max(1));
    // Before the data load, so that a bad combination of flags wastes nothing.
    cfg.check().map_err(TrainError::Config)?;
    if cluster.workers > 0 {
        cluster.check()?;
    }
    check_output_files(&output_files(&cfg, cluster, outputs))?;
    let checkpoint = cfg.checkpoint_path(&cfg.out_path());
    if cfg.resume.is_none() && !outputs.overwrite && checkpoint.exists() {
        anyhow::bail!(
            "the checkpoint {} already exists and this run would start afresh and replace it: give --resume auto to continue it, --overwrite to start over, or another --out or --checkpoint",
            checkpoint.display()
        );
    }
    tracing::info!(
        config = %serde_json::to_string(&cfg)?,
        cluster = %serde_json::to_string(cluster)?,
        "starting"
    );
    // Served from the start, so that a scrape during the data load already answers.
    let metrics = outputs.metrics_listen.map(|_| TrainingMetrics::new());
    let _server = match (outputs.metrics_listen, &metrics) {
        (Some(addr), Some(m)) => {
            let m = m.clone();
            Some(MetricsServer::start(addr, Arc::new(move || m.render()))?)
        }
        _ => None,
    };
    let dataset = Arc::new(obtain_dataset(cfg.dataset, cfg.data_dir.as_deref())?);
    let data = TrainingData::prepare(&cfg, dataset)?;
    console.plan(&cfg, &data, cluster.workers);
    let mut progress = Progress::new(console);
    let mut scores = outputs.scores.clone().map(ScoresFile::new);
    let mut metrics = metrics;
    let mut watchers: Vec<&mut (dyn RunObserver + Send)> = vec![&mut progress];
    if let Some(m) = &mut metrics {
        watchers.push(m);
    }
    if let Some(s) = &mut scores {
        watchers.push(s);
    }
    let mut observer = Observers(watchers);
    let control = RunControl {
        observer: &mut observer,
        stop,
    };
    let results = match cluster.workers {
        0 => train_in_process(&cfg, data, control)?,
        _ => train_on_cluster(&cfg, cluster, data, control)?,
    };
    drop(observer);
    let out = cfg.out_path();
    let mut extra = Vec::new();
    let curves = write_curves(&results, &out)
        .inspect_err(|e| tracing::warn!("the training curves were not drawn: {e}"))
        .ok();
    if let Some(path) = &curves {
        extra.push(("curves", path.as_path()));
    }
    if let Some(s) = &scores {
        if let Some(e) = &s.error {
            anyhow::bail!("writing the test scores to {}: {e}", s.path().display());
        }
        extra.push(("test pair scores", s.path()));
    }
    console.summary(&results, &out, &extra);
    Ok(())
}

/// Every file the run writes: the library's, the cluster's address, the test scores and the
/// curves.
fn output_files(
    cfg: &TrainConfig,
    cluster: &ClusterArgs,
    outputs: &RunOutputArgs,
) -> Vec<OutputFile> {
    let mut files = cfg.output_files();
    if let Some(address) = cluster
        .address_file
        .as_ref()
        .filter(|_| cluster.workers > 0)
    {
        files.push(OutputFile::new("--address-file", address.clone()));
    }
    if let Some(scores) = &outputs.scores {
        files.push(OutputFile::new("--scores", scores.clone()));
    }
    files.push(OutputFile::new(
        "the curves (beside --out)",
        curves_path(&cfg.out_path()),
    ));
    files
}
