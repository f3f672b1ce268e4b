//! `coordinator bench scaling`: the real cluster (worker processes over gRPC) at several worker
//! counts, strong and weak scaling as SPEC.md defines them, with the step-time split.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::io_error;
use super::plot::plot_scaling;
use super::stats::Spread;
use crate::cluster::{Aggregation, ClusterArgs, with_cluster};
use crate::config::TrainConfig;
use crate::data::{DatasetKind, obtain_dataset};
use crate::train::{TimedSteps, TrainError, Trainer, TrainingData};

/// Which scaling to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalingMode {
    /// Global batch fixed: each worker gets batch / N pairs.
    Strong,
    /// Batch per worker fixed: the global batch grows with N.
    Weak,
    /// Both.
    Both,
}

/// Settings of `coordinator bench scaling`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingArgs {
    /// Dataset to train on.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetKind,
    /// Folder holding the dataset's files (same resolution as training).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Compute threads of each worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Worker counts, comma-separated; 1 worker is always measured as the baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Strong scaling, weak scaling, or both.
    #[arg(long, value_enum, default_value = "weak")]
    pub mode: ScalingMode,
    /// Pairs per worker per step (weak), or per step in all (strong).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Measured steps per run.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Steps run before measuring (thread start-up, page faults, first allocations).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Runs of every configuration, taken in alternation; figures are medians over them.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Send weights and gradients through gRPC instead of shared memory.
    #[arg(long)]
    pub no_shm: bool,
    /// Where gradients meet (as for training).
    #[arg(long, value_enum, default_value = "allreduce")]
    pub aggregation: Aggregation,
    /// JSON report; a CSV and a PNG plot are written beside it.
    #[arg(long, default_value = "results/scaling.json")]
    pub out: PathBuf,
}

/// The figures of one worker count in one mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingRun {
    /// Number of workers.
    pub workers: usize,
    /// `strong` or `weak`.
    pub mode: String,
    /// Pairs per optimizer step, all workers together.
    pub global_batch: usize,
    /// Median training throughput.
    pub pairs_per_s: f64,
    /// Its spread over the repeats.
    pub pairs_per_s_spread: Spread,
    /// Median throughput over the 1-worker median.
    pub speedup: f64,
    /// Speedup over the worker count (SPEC.md: T1 / (N TN) strong, thrN / (N thr1) weak).
    pub efficiency: f64,
    /// Share of step time outside compute (median).
    pub comm_share: f64,
    /// Median per-step milliseconds: compute, waiting, transfer, aggregation.
    pub compute_ms: f64,
    /// Waiting for the slowest worker.
    pub waiting_ms: f64,
    /// Moving gradients and weights.
    pub transfer_ms: f64,
    /// Averaging, Adam and queueing the weights.
    pub aggregation_ms: f64,
}

/// What `bench scaling` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalingReport {
    /// The machine, as /proc/cpuinfo names it, and its cores.
    pub machine: String,
    /// How weights and gradients travelled.
    pub transport: String,
    /// The settings.
    pub args: ScalingArgs,
    /// One row per worker count and mode.
    pub runs: Vec<ScalingRun>,
}

/// One measured run.
struct Sample {
    pairs_per_s: f64,
    split_ms: [f64; 4],
    comm_share: f64,
}

fn sample(t: &TimedSteps) -> Sample {
    let per_step = |s: f64| 1e3 * s / t.steps.max(1) as f64;
    Sample {
        pairs_per_s: t.pairs as f64 / t.seconds.max(1e-9),
        split_ms: [
            per_step(t.timing.compute_s),
            per_step(t.timing.waiting_s),
            per_step(t.timing.transfer_s),
            per_step(t.timing.aggregation_s),
        ],
        comm_share: t.timing.comm_share(),
    }
}

/// The host's CPU model and core count, for the report.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores")
}

/// The configurations to measure: (mode, workers, global batch), baseline first.
fn configurations(args: &ScalingArgs) -> Vec<(&'static str, usize, usize)> {
    let modes: &[&'static str] = match args.mode {
        ScalingMode::Strong => &["strong"],
        ScalingMode::Weak => &["weak"],
        ScalingMode::Both => &["strong", "weak"],
    };
    let mut counts: Vec<usize> = args.workers.iter().copied().filter(|&n| n > 1).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut out = vec![("baseline", 1, args.batch_size)];
    for &mode in modes {
        for &n in &counts {
            let batch = match mode {
                "weak" => args.batch_size * n,
                _ => args.batch_size,
            };
            out.push((mode, n, batch));
        }
    }
    out
}

/// Runs every configuration `repeats` times in alternation and prints and writes the report.
pub async fn run_scaling(args: ScalingArgs) -> Result<ScalingReport, TrainError> {
    if args.steps == 0 || args.repeats == 0 || args.batch_size == 0 {
        return Err(TrainError::Config(
            "--steps, --repeats and --batch-size must be at least 1".into(),
        ));
    }
    let configs = configurations(&args);
    if let Some(&(_, n, b)) = configs.iter().find(|(_, n, b)| b < n) {
        return Err(TrainError::Config(format!(
            "a batch of {b} pairs cannot be split across {n} workers"
        )));
    }
    let data_dir = args.data_dir.clone();
    let kind = args.dataset;
    let dataset = tokio::task::spawn_blocking(move || obtain_dataset(kind, data_dir.as_deref()))
        .await
        .map_err(|e| TrainError::Engine(format!("loading the dataset: {e}")))??;
    let dataset = Arc::new(dataset);
    let bad_env = |e: clap::Error| TrainError::Config(format!("an environment variable: {e}"));
    let base_cfg = TrainConfig::defaults(args.dataset).map_err(bad_env)?;
    let base_cluster = crate::config::clap_defaults::<ClusterArgs>().map_err(bad_env)?;
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for repeat in 0..args.repeats {
        for (i, &(mode, workers, batch)) in configs.iter().enumerate() {
            let cfg = TrainConfig {
                batch_size: batch as u32,
                threads: Some(args.threads),
                val_pairs: Some(1),
                test_pairs: Some(1),
                data_dir: args.data_dir.clone(),
                ..base_cfg.clone()
            };
            let cluster = ClusterArgs {
                workers,
                no_shm: args.no_shm,
                aggregation: args.aggregation,
                ..base_cluster.clone()
            };
            let data = TrainingData::prepare(&cfg, dataset.clone())?;
            let (warmup, steps) = (args.warmup, args.steps);
            let run_cfg = cfg.clone();
            let t = with_cluster(&cfg, &cluster, dataset.clone(), move |engine| {
                Trainer::new(run_cfg, data).timed_steps(engine, batch, warmup, steps)
            })
            .await?;
            let s = sample(&t);
            eprintln!(
                "repeat {}/{}: {mode} {workers} worker(s), batch {batch}: {:.0} pairs/s, {:.1}% outside compute",
                repeat + 1,
                args.repeats,
                s.pairs_per_s,
                100.0 * s.comm_share
            );
            samples[i].push(s);
        }
    }
    let base = Spread::of(&samples[0].iter().map(|s| s.pairs_per_s).collect::<Vec<_>>()).median;
    let mut runs = Vec::new();
    for (&(mode, workers, batch), got) in configs.iter().zip(&samples) {
        let med = |f: &dyn Fn(&Sample) -> f64| Spread::of(&got.iter().map(f).collect::<Vec<_>>());
        let thr = med(&|s| s.pairs_per_s);
        let speedup = thr.median / base.max(1e-9);
        let modes: Vec<&str> = match (mode, args.mode) {
            ("baseline", ScalingMode::Both) => vec!["strong", "weak"],
            ("baseline", ScalingMode::Strong) => vec!["strong"],
            ("baseline", _) => vec!["weak"],
            (m, _) => vec![m],
        };
        for m in modes {
            runs.push(ScalingRun {
                workers,
                mode: m.into(),
                global_batch: batch,
                pairs_per_s: thr.median,
                pairs_per_s_spread: thr,
                speedup,
                efficiency: speedup / workers as f64,
                comm_share: med(&|s| s.comm_share).median,
                compute_ms: med(&|s| s.split_ms[0]).median,
                waiting_ms: med(&|s| s.split_ms[1]).median,
                transfer_ms: med(&|s| s.split_ms[2]).median,
                aggregation_ms: med(&|s| s.split_ms[3]).median,
            });
        }
    }
    runs.sort_by(|a, b| (&a.mode, a.workers).cmp(&(&b.mode, b.workers)));
    let report = ScalingReport {
        machine: machine(),
        transport: if args.no_shm { "grpc" } else { "shared-memory" }.into(),
        args,
        runs,
    };
    println!("{}", scaling_table(&report));
    write_scaling(&report)?;
    Ok(report)
}

/// The report as a markdown table.
pub fn scaling_table(r: &ScalingReport) -> String {
    let mut s = format!(
        "{} on {}; {} threads per worker, {} measured steps after {} warm-up, median of {} (transport: {}, aggregation: {})\n\n",
        r.args.dataset.name(),
        r.machine,
        r.args.threads,
        r.args.steps,
        r.args.warmup,
        r.args.repeats,
        r.transport,
        r.args.aggregation.name()
    );
    s.push_str("| mode | workers | global batch | pairs/s (range) | speedup | efficiency | compute ms | waiting ms | transfer ms | aggregation ms | outside compute |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in &r.runs {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} ({:.0}-{:.0}) | {:.2} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}% |\n",
            run.mode,
            run.workers,
            run.global_batch,
            run.pairs_per_s,
            run.pairs_per_s_spread.min,
            run.pairs_per_s_spread.max,
            run.speedup,
            100.0 * run.efficiency,
            run.compute_ms,
            run.waiting_ms,
            run.transfer_ms,
            run.aggregation_ms,
            100.0 * run.comm_share
        ));
    }
    s
}

/// Writes the JSON, the CSV beside it and the PNG plot.
fn write_scaling(r: &ScalingReport) -> Result<(), TrainError> {
    let out = &r.args.out;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let json = serde_json::to_vec_pretty(r).map_err(|e| TrainError::Engine(e.to_string()))?;
    std::fs::write(out, json).map_err(io_error(out))?;
    let mut csv = String::from(
        "mode,workers,global_batch,pairs_per_s,pairs_per_s_min,pairs_per_s_max,speedup,efficiency,comm_share,compute_ms,waiting_ms,transfer_ms,aggregation_ms\n",
    );
    for x in &r.runs {
        csv.push_str(&format!(
            "{},{},{},{:.1},{:.1},{:.1},{:.4},{:.4},{:.4},{:.3},{:.3},{:.3},{:.3}\n",
            x.mode,
            x.workers,
            x.global_batch,
            x.pairs_per_s,
            x.pairs_per_s_spread.min,
            x.pairs_per_s_spread.max,
            x.speedup,
            x.efficiency,
            x.comm_share,
            x.compute_ms,
            x.waiting_ms,
            x.transfer_ms,
            x.aggregation_ms
        ));
    }
    let csv_path = out.with_extension("csv");
    std::fs::write(&csv_path, csv).map_err(io_error(&csv_path))?;
    let png = out.with_extension("png");
    plot_scaling(&r.runs, &png)
        .map_err(|e| TrainError::Engine(format!("{}: {e}", png.display())))?;
    eprintln!(
        "wrote {}, {} and {}",
        out.display(),
        csv_path.display(),
        png.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScalingArgs,
    }

    #[test]
    fn baseline_first_then_each_mode() {
        let cli = Cli::parse_from(["x", "--workers", "4,2,2", "--mode", "both"]);
        let c = configurations(&cli.args);
        assert_eq!(
            c,
            vec![
                ("baseline", 1, 64),
                ("strong", 2, 64),
                ("strong", 4, 64),
                ("weak", 2, 128),
                ("weak", 4, 256)
            ]
        );
    }
}
