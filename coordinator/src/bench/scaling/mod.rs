//! `coordinator bench scaling`: the real cluster (worker processes over gRPC) at several worker
//! counts, strong and weak scaling as docs/spec.md defines them, with the step-time split.

mod report;
mod settings;

use std::sync::Arc;

use report::write_scaling;
pub use report::{ScalingReport, ScalingRun, scaling_table};
pub use settings::{ScalingArgs, ScalingMode};

use super::BenchError;
use super::machine::machine;
use super::stats::Spread;
use siamese_common::cluster::{ClusterArgs, with_cluster};
use siamese_common::config::TrainConfig;
use siamese_common::data::obtain_dataset;
use siamese_common::stop::StopFlag;
use siamese_common::train::output_files::{OutputFile, check_output_files};
use siamese_common::train::{TimedSteps, Trainer, TrainingData};

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
pub fn run_scaling(args: ScalingArgs, stop: &StopFlag) -> Result<ScalingReport, BenchError> {
    let configs = configurations(&args);
    if let Some(&(_, n, b)) = configs.iter().find(|(_, n, b)| b < n) {
        return Err(BenchError::Config(format!(
            "a batch of {b} pairs cannot be split across {n} workers"
        )));
    }
    check_output_files(&[
        OutputFile::new("--out", args.out.clone()),
        OutputFile::new("the CSV (beside --out)", args.out.with_extension("csv")),
        OutputFile::new("the plot (beside --out)", args.out.with_extension("png")),
    ])?;
    let dataset = Arc::new(obtain_dataset(args.dataset, args.data_dir.as_deref())?);
    let base_cfg = TrainConfig::defaults(args.dataset)?;
    let base_cluster = siamese_common::config::clap_defaults::<ClusterArgs>()?;
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
            let t = with_cluster(&cfg, &cluster, dataset.clone(), stop, |engine| {
                let mut trainer = Trainer::new(run_cfg, data);
                trainer.stop_on(stop.clone());
                trainer.timed_steps(engine, batch, warmup, steps)
            })?;
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
