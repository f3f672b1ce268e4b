//! What `coordinator bench scaling` prints and writes: the table, the JSON, the CSV and the plot.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::settings::ScalingArgs;
use crate::bench::BenchError;
use crate::bench::files::{write_bytes, write_json, write_png};
use crate::bench::plot::{Panel, PlotError, Series, draw_panels};
use crate::bench::stats::Spread;

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
    /// Speedup over the worker count (docs/spec.md: T1 / (N TN) strong, thrN / (N thr1) weak).
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
pub(super) fn write_scaling(r: &ScalingReport) -> Result<(), BenchError> {
    let out = &r.args.out;
    write_json(out, r)?;
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
    write_bytes(&csv_path, csv.as_bytes())?;
    let png = out.with_extension("png");
    write_png(&png, |tmp| plot_scaling(&r.runs, tmp))?;
    eprintln!(
        "wrote {}, {} and {}",
        out.display(),
        csv_path.display(),
        png.display()
    );
    Ok(())
}

/// Speedup and efficiency against workers, per mode, with the ideal lines.
fn plot_scaling(runs: &[ScalingRun], path: &Path) -> Result<(), PlotError> {
    let mut modes: Vec<&str> = runs.iter().map(|r| r.mode.as_str()).collect();
    modes.dedup();
    let max_workers = runs.iter().map(|r| r.workers).max().unwrap_or(1) as f64;
    let series = |f: fn(&ScalingRun) -> f64| {
        modes
            .iter()
            .map(|m| {
                let pts = runs
                    .iter()
                    .filter(|r| r.mode == *m)
                    .map(|r| (r.workers as f64, f(r)))
                    .collect();
                Series::line(format!("{m} scaling"), pts)
            })
            .collect::<Vec<_>>()
    };
    let mut speedup = series(|r| r.speedup);
    speedup.push(Series::reference(
        "ideal",
        vec![(1.0, 1.0), (max_workers, max_workers)],
    ));
    let mut efficiency = series(|r| r.efficiency);
    efficiency.push(Series::reference(
        "ideal",
        vec![(1.0, 1.0), (max_workers, 1.0)],
    ));
    draw_panels(
        &[
            Panel {
                title: "Speedup",
                x_label: "workers",
                y_label: "speedup over 1 worker",
                series: speedup,
                y_from_zero: true,
            },
            Panel {
                title: "Scaling efficiency",
                x_label: "workers",
                y_label: "efficiency",
                series: efficiency,
                y_from_zero: true,
            },
        ],
        path,
    )
}
