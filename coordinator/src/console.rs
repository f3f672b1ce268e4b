//! What a training run prints on the terminal: the plan, a line per epoch and the summary.

use siamese_common::config::TrainConfig;
use siamese_common::results::{EpochRecord, RunResults};
use siamese_common::train::TrainingData;

/// The run's plan: data sizes, epochs and who computes.
pub fn print_plan(cfg: &TrainConfig, data: &TrainingData, workers: usize) {
    let who = match workers {
        0 => format!("this process ({} threads)", cfg.threads_per_process(1)),
        n => format!("{n} workers"),
    };
    println!(
        "{}: {} training images, {} validation pairs, {} test pairs; {} epochs of batch {} on {who}",
        data.dataset.kind.name(),
        data.train_pool.len(),
        data.val_pairs.len(),
        data.test_pairs.len(),
        cfg.epochs(),
        cfg.batch_size,
    );
}

/// One epoch's figures.
pub fn print_epoch(e: &EpochRecord) {
    println!(
        "epoch {:>4}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.2} s ({:.0} pairs/s)",
        e.epoch,
        e.train_loss,
        e.train_accuracy,
        e.val_loss,
        e.val_accuracy,
        e.seconds,
        e.pairs_per_s
    );
}

/// The test figures, each worker's step-time split and where the results went.
pub fn print_summary(r: &RunResults, out: &std::path::Path) {
    let t = &r.test;
    println!(
        "test: {} pairs  pair accuracy {:.4}  ROC AUC {:.4}  nearest-class-mean accuracy {:.4}  test time {:.3} s ({:.0} images/s)",
        t.pairs, t.pair_accuracy, t.roc_auc, t.ncm_accuracy, t.time_s, t.images_per_s
    );
    for w in &r.timing.per_worker {
        println!(
            "worker {} ({}): {} steps  compute {:.2} s  waiting {:.2} s  transfer {:.2} s  aggregation {:.2} s  ({:.1}% outside compute)",
            w.rank,
            w.peer,
            w.steps,
            w.compute_s,
            w.waiting_s,
            w.transfer_s,
            w.aggregation_s,
            100.0 * w.comm_share()
        );
    }
    println!("results written to {}", out.display());
}
