//! The training recipe beyond the paper's (augmentation, dropout, decoupled weight decay, the
//! cosine schedule, best-validation selection, drops of the rate on a plateau, early stopping and
//! the weights' moving average), with the real binaries: any number of workers and either
//! aggregation trains the same bytes, a run stopped mid-epoch and resumed chooses the same
//! weights, and settings out of range or of another run are refused by name.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use integration_tests::model_tensors as weights;
use integration_tests::{bin, mnist_run_files, read_results, run_with_limit};

/// Every recipe flag away from the paper's setting. A learning rate four times the paper's
/// keeps validation accuracy flat from the first epoch on this subset, so that the patience
/// divides the rate early, and twice; after the second the patience ends the run before its
/// last epoch (the outcome is fixed: the arithmetic is deterministic).
const RECIPE: [&str; 16] = [
    "--augment",
    "crop",
    "--dropout",
    "0.2",
    "--weight-decay",
    "0.05",
    "--lr-schedule",
    "cosine",
    "--select",
    "best-val",
    "--patience",
    "2",
    "--lr",
    "4e-3",
    "--lr-drops",
    "2",
];

/// Patience and drops of the rate in [`RECIPE`].
const PATIENCE: usize = 2;
const DROPS: usize = 2;

fn coordinator(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args(["--dataset", "mnist", "--epochs", "30", "--seed", "5"])
        .args(["--train-subset", "600", "--val-pairs", "300"])
        .args(["--test-pairs", "300", "--threads", "1"]);
    mnist_run_files(&mut cmd, dir).args(extra);
    cmd
}

fn succeed(cmd: &mut Command, what: &str) -> String {
    let out = run_with_limit(cmd, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed:\n{err}");
    err
}

/// What a finished run leaves: its weights, the best epoch's weights file, and its results.
struct Outcome {
    weights: Vec<(String, Vec<u8>)>,
    best: Vec<(String, Vec<u8>)>,
    results: serde_json::Value,
}

fn outcome(dir: &Path) -> Outcome {
    let results = read_results(&dir.join("run.json"));
    let best = results["selection"]["weights"]
        .as_str()
        .expect("a best-val run names its weights file");
    Outcome {
        weights: weights(&dir.join("run.safetensors")),
        best: weights(Path::new(best)),
        results,
    }
}

/// The run in one process, uninterrupted.
fn reference() -> &'static Outcome {
    static REFERENCE: OnceLock<Outcome> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--workers", "0"];
        extra.extend(RECIPE);
        succeed(&mut coordinator(dir.path(), &extra), "the reference run");
        outcome(dir.path())
    })
}

fn epochs_of(results: &serde_json::Value) -> Vec<f64> {
    results["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["val_accuracy"].as_f64().unwrap())
        .collect()
}

#[test]
fn best_validation_and_patience_choose_and_stop_as_stated() {
    let r = reference();
    let sel = &r.results["selection"];
    let vals = epochs_of(&r.results);
    let best = sel["epoch"].as_u64().unwrap() as usize;
    // The earliest epoch of the highest validation accuracy is the one chosen...
    let top = vals.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(
        vals.iter().position(|&v| v == top),
        Some(best - 1),
        "{vals:?}"
    );
    assert_eq!(sel["val_accuracy"].as_f64(), Some(top));
    assert_eq!(sel["rule"], "best-val");
    // The rate was divided, and training ended, where the validation curve says...
    let (drops, end) = plateaus(&vals);
    let recorded: Vec<usize> = sel["lr_drops"]
        .as_array()
        .expect("the drops of the rate are recorded")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(recorded, drops, "{vals:?}");
    assert_eq!(drops.len(), DROPS, "{vals:?}");
    assert_eq!(Some(vals.len()), end, "{vals:?}");
    assert_eq!(sel["stopped_early"], true, "{vals:?}");
    assert!(vals.len() < 30);
    // ...and the lower rate is what got the model off the plateau of the first epochs.
    let before = vals[..drops[0]].iter().cloned().fold(f64::MIN, f64::max);
    assert!(top > before + 0.05, "{vals:?}");
    // The chosen weights are not the last ones: the test figures are of the best epoch.
    assert!(
        r.best != r.weights,
        "the best epoch is the last; pick another recipe"
    );
}

/// The epochs after which `--patience` epochs without a better validation accuracy (counted
/// from the best one or the last drop) divide the rate, and the epoch that ends the run.
fn plateaus(vals: &[f64]) -> (Vec<usize>, Option<usize>) {
    let (mut best, mut top, mut drops) = (0, f64::MIN, Vec::new());
    for (i, &v) in vals.iter().enumerate() {
        let epoch = i + 1;
        if v > top {
            (best, top) = (epoch, v);
        }
        let since = drops.last().map_or(best, |&d: &usize| d.max(best));
        if epoch >= since + PATIENCE {
            if drops.len() == DROPS {
                return (drops, Some(epoch));
            }
            drops.push(epoch);
        }
    }
    (drops, None)
}

#[test]
fn any_worker_count_and_either_aggregation_train_the_same_bytes() {
    for (workers, aggregation) in [("2", "allreduce"), ("3", "coordinator")] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--workers", workers, "--aggregation", aggregation];
        extra.extend(RECIPE);
        succeed(&mut coordinator(dir.path(), &extra), aggregation);
        let o = outcome(dir.path());
        let what = format!("{workers} workers, {aggregation}");
        assert!(o.weights == reference().weights, "{what}: other weights");
        assert!(o.best == reference().best, "{what}: another best epoch");
        assert_eq!(chosen(&o.results), chosen(&reference().results), "{what}");
    }
}

#[test]
fn every_augmentation_trains_the_same_bytes_on_any_worker_count() {
    let run = |augment: &[&str], workers: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--workers", workers, "--max-steps", "20", "--augment"];
        extra.extend(augment);
        succeed(&mut coordinator(dir.path(), &extra), &augment.join(" "));
        weights(&dir.path().join("run.safetensors"))
    };
    let plain = run(&["none"], "0");
    let mut seen = vec![plain];
    // RECIPE covers crop; these are the other modes, and crop-flip's default shift (an eighth
    // of the side, 3 here) against named ones.
    for augment in [
        &["flip"][..],
        &["crop-flip"],
        &["crop-flip", "--crop-pad", "1"],
        &["crop-flip", "--crop-pad", "3"],
        &["crop-flip-cutout"],
        &["crop-flip-jitter"],
    ] {
        let what = augment.join(" ");
        let one = run(augment, "0");
        if what == "crop-flip --crop-pad 3" {
            assert!(one == seen[2], "{what}: not the default pad's weights");
        } else {
            assert!(
                !seen.contains(&one),
                "{what} trained as an earlier mode did"
            );
        }
        assert!(run(augment, "2") == one, "{what}: 2 workers, other weights");
        seen.push(one);
    }
}

/// The choice and the test figures, without the file paths.
fn chosen(results: &serde_json::Value) -> [serde_json::Value; 4] {
    let sel = &results["selection"];
    [
        sel["epoch"].clone(),
        sel["val_accuracy"].clone(),
        sel["stopped_early"].clone(),
        results["test"]["pair_accuracy"].clone(),
    ]
}

#[test]
fn a_run_stopped_mid_epoch_and_resumed_chooses_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec!["--workers", "0", "--resume", "auto"];
    extra.extend(RECIPE);
    // 10 steps a 600-image epoch: stop inside the fourth, after a best epoch was kept.
    let mut first = extra.clone();
    first.extend(["--max-steps", "35"]);
    succeed(&mut coordinator(dir.path(), &first), "the first part");
    succeed(&mut coordinator(dir.path(), &extra), "the resumed run");
    let o = outcome(dir.path());
    assert!(
        o.weights == reference().weights,
        "other weights after resuming"
    );
    assert!(
        o.best == reference().best,
        "another best epoch after resuming"
    );
    assert_eq!(chosen(&o.results), chosen(&reference().results));
}

#[test]
fn a_run_ended_by_its_patience_and_resumed_with_more_drops_trains_on_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = vec!["--workers", "0", "--resume", "auto"];
    first.extend(&RECIPE[..RECIPE.len() - 2]);
    succeed(
        &mut coordinator(dir.path(), &first),
        "the run without drops",
    );
    let ended = read_results(&dir.path().join("run.json"));
    assert_eq!(ended["selection"]["stopped_early"], true);
    let mut more = vec!["--workers", "2", "--resume", "auto"];
    more.extend(RECIPE);
    succeed(
        &mut coordinator(dir.path(), &more),
        "the run resumed with drops",
    );
    let o = outcome(dir.path());
    assert!(o.weights == reference().weights, "other weights");
    assert!(o.best == reference().best, "another best epoch");
    assert_eq!(chosen(&o.results), chosen(&reference().results));
    assert_eq!(
        o.results["selection"]["lr_drops"],
        reference().results["selection"]["lr_drops"]
    );
}

#[test]
fn resuming_with_another_recipe_is_refused_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec!["--workers", "0", "--max-steps", "3"];
    extra.extend(RECIPE);
    succeed(&mut coordinator(dir.path(), &extra), "a short run");
    let out = run_with_limit(
        &mut coordinator(
            dir.path(),
            &[
                "--workers",
                "0",
                "--lr",
                "4e-3",
                "--augment",
                "crop-flip",
                "--crop-pad",
                "2",
                "--ema",
                "0.99",
                "--resume",
                "auto",
            ],
        ),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "--augment is crop-flip here, crop in the checkpoint",
        "--crop-pad is 2 here, none in the checkpoint",
        "--weight-decay is 0 here, 0.05 in the checkpoint",
        "--lr-schedule is constant here, cosine in the checkpoint",
        "--dropout is 0 here, 0.2 in the checkpoint",
        "--ema is 0.99 here, 0 in the checkpoint",
        "--epochs (the schedule spans them) is none here, 30 in the checkpoint",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }
}

#[test]
fn recipe_flags_out_of_range_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, want) in [
        (
            "--weight-decay",
            "2",
            "2 is not a weight decay (finite, 0 to 1)",
        ),
        ("--weight-decay", "NaN", "not a weight decay"),
        // A negative value reaches the flag's own check instead of reading as another flag.
        ("--weight-decay", "-0.1", "-0.1 is not a weight decay"),
        ("--lr", "-1", "-1 is not a learning rate"),
        ("--patience", "0", "0 is not in 1.."),
        (
            "--dropout",
            "0.95",
            "0.95 is not a dropout probability (finite, 0 to 0.9)",
        ),
        ("--augment", "rotate", "invalid value 'rotate'"),
        ("--lr-schedule", "step", "invalid value 'step'"),
        ("--lr-drops", "7", "7 is not in 0..=6"),
        // Drops of the rate happen on a plateau, which only --patience defines.
        (
            "--lr-drops",
            "1",
            "required arguments were not provided:\n  --patience",
        ),
        ("--select", "best-test", "invalid value 'best-test'"),
        ("--crop-pad", "9", "9 is not in 1..=8"),
        ("--crop-pad", "0", "0 is not in 1..=8"),
        (
            "--ema",
            "0.5",
            "0.5 is not an --ema decay (0 to turn it off, or 0.9 to under 1)",
        ),
        ("--ema", "1", "1 is not an --ema decay"),
        ("--lr-drop-after", "0", "0 is not in 1.."),
        ("--lr-drop-after", "3,x", "invalid value 'x'"),
    ] {
        let out = run_with_limit(
            &mut coordinator(dir.path(), &["--workers", "0", flag, value]),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(want) && err.contains(flag),
            "{flag} {value}: {err}"
        );
        assert!(!dir.path().join("run.json").exists());
    }
    // A shift for an augmentation that does not shift means nothing: refused before training.
    let out = run_with_limit(
        &mut coordinator(
            dir.path(),
            &["--workers", "0", "--augment", "flip", "--crop-pad", "2"],
        ),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--crop-pad 2 sets the crop's shift, but --augment flip does not crop"),
        "{err}"
    );
    assert!(!dir.path().join("run.json").exists());
    // Flags that cannot go together: refused before training, naming both.
    for (flags, want) in [
        (
            &["--lr-drop-after", "4,2"][..],
            "--lr-drop-after 4,2 must list increasing epochs from 1",
        ),
        (
            &["--lr-drop-after", "2", "--patience", "3", "--lr-drops", "1"][..],
            "the argument '--lr-drop-after <EPOCHS>' cannot be used with '--lr-drops <LR_DROPS>'",
        ),
        // A drop at or after the last epoch (the helper's --epochs 30) would never happen.
        (
            &["--lr-drop-after", "10,30"][..],
            "--lr-drop-after 10,30 drops the rate after epoch 30, but the run trains 30 epochs (--epochs)",
        ),
        (
            &["--train-on-validation", "--select", "best-val"][..],
            "--train-on-validation trains on the validation images, so validation cannot choose for --select best-val",
        ),
        (
            &["--train-on-validation", "--patience", "5"][..],
            "validation cannot choose for --patience 5",
        ),
    ] {
        let mut args = vec!["--workers", "0"];
        args.extend(flags);
        let out = run_with_limit(&mut coordinator(dir.path(), &args), Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!dir.path().join("run.json").exists());
    }
}

/// A fixed schedule that lists the epochs where the reference run's plateaus dropped the rate
/// trains the reference run's bytes: the two kinds of drop are one mechanism.
#[test]
fn a_fixed_schedule_at_the_plateaus_epochs_trains_the_plateau_runs_bytes() {
    let r = reference();
    let drops: Vec<String> = r.results["selection"]["lr_drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(drops.len(), DROPS);
    // The reference's patience ended it after this many epochs of 600 pairs (10 steps each);
    // its cosine schedule spans --epochs 30, so the fixed run keeps that and stops there.
    let epochs = epochs_of(&r.results).len();
    let steps = (epochs * 600_usize.div_ceil(64)).to_string();
    let schedule = drops.join(",");
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec!["--workers", "2", "--max-steps", &steps];
    extra.extend(&RECIPE[..RECIPE.len() - 6]);
    extra.extend(["--lr", "4e-3", "--lr-drop-after", &schedule]);
    succeed(
        &mut coordinator(dir.path(), &extra),
        "the run with a fixed schedule",
    );
    let o = outcome(dir.path());
    assert_eq!(
        o.results["selection"]["lr_drops"],
        r.results["selection"]["lr_drops"]
    );
    assert_eq!(epochs_of(&o.results), epochs_of(&r.results));
    assert!(o.weights == r.weights, "other weights");
    assert!(o.best == r.best, "another best epoch");
}

/// Training pairs of a run's first epoch, from its rate and time.
fn first_epoch_pairs(results: &serde_json::Value) -> f64 {
    let e = &results["epochs"][0];
    e["pairs_per_s"].as_f64().unwrap() * e["seconds"].as_f64().unwrap()
}

#[test]
fn training_on_validation_trains_every_image_of_the_training_file_alike_on_any_worker_count() {
    let mut runs = Vec::new();
    for workers in ["0", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "--workers",
            workers,
            // One epoch: 12,600 pairs in batches of 64.
            "--max-steps",
            "197",
            "--train-on-validation",
            "--augment",
            "crop",
        ];
        succeed(
            &mut coordinator(dir.path(), &args),
            "a run on validation too",
        );
        let results = read_results(&dir.path().join("run.json"));
        // The 600 training images of the subset and MNIST's 12,000 validation images.
        let pairs = first_epoch_pairs(&results);
        assert!((pairs - 12_600.0).abs() < 12.6, "{pairs} pairs");
        runs.push(weights(&dir.path().join("run.safetensors")));
    }
    assert!(runs[0] == runs[1], "two workers trained other weights");
}

#[test]
fn test_time_mirror_changes_only_the_test_figures_and_scores_alike_on_any_worker_count() {
    let run = |workers: &str, views: &str| {
        let dir = tempfile::tempdir().unwrap();
        let scores = dir.path().join("scores.csv");
        let extra = [
            "--workers",
            workers,
            "--augment",
            "crop-flip",
            "--max-steps",
            "20",
            "--test-augment",
            views,
            "--scores",
            scores.to_str().unwrap(),
        ];
        succeed(&mut coordinator(dir.path(), &extra), views);
        let results = read_results(&dir.path().join("run.json"));
        (
            weights(&dir.path().join("run.safetensors")),
            epochs_of(&results),
            std::fs::read(&scores).unwrap(),
            results["test"]["pair_accuracy"].as_f64().unwrap(),
        )
    };
    let plain = run("0", "none");
    let mirror = run("0", "mirror");
    // Training and validation are untouched...
    assert!(mirror.0 == plain.0, "--test-augment changed the weights");
    assert_eq!(mirror.1, plain.1, "--test-augment changed validation");
    // ...the test scores are not...
    assert!(mirror.2 != plain.2, "mirror scored as if it were none");
    assert!((0.0..=1.0).contains(&mirror.3));
    // ...and workers score them to the byte as one process does.
    let two = run("2", "mirror");
    assert!(two.0 == mirror.0, "2 workers: other weights");
    assert!(
        two.2 == mirror.2,
        "2 workers: other test scores with mirror"
    );
}

#[test]
fn a_weight_average_changes_only_what_is_scored_and_resumes_to_the_same_bytes() {
    let run = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["--augment", "crop"];
        args.extend(extra);
        succeed(&mut coordinator(dir, &args), &extra.join(" "));
        read_results(&dir.join("run.json"))
    };
    // 10 steps an epoch: three whole epochs and half of the fourth.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = run(plain_dir.path(), &["--workers", "0", "--max-steps", "35"]);
    let ema_dir = tempfile::tempdir().unwrap();
    let ema = ["--ema", "0.9", "--max-steps", "35"];
    let one = run(ema_dir.path(), &[&["--workers", "0"][..], &ema].concat());
    let trained = weights(&plain_dir.path().join("run.safetensors"));
    // Training is untouched: the checkpoint's weights are the plain run's...
    assert!(
        weights(&ema_dir.path().join("run.safetensors")) == trained,
        "--ema changed the trained weights"
    );
    // ...while validation and the test score the average, written beside them.
    assert_ne!(
        epochs_of(&one),
        epochs_of(&plain),
        "validation ignored --ema"
    );
    let file = one["selection"]["weights"].as_str().expect("an ema file");
    assert!(file.ends_with("run.ema.safetensors"), "{file}");
    let average = weights(Path::new(file));
    assert!(average != trained, "the average is the last weights");
    assert_eq!(one["config"]["ema"], 0.9);
    // Two workers, stopped inside the second epoch and resumed: the same average, the same
    // figures (the checkpoint carries the average).
    let dir = tempfile::tempdir().unwrap();
    let two = ["--workers", "2", "--resume", "auto", "--ema", "0.9"];
    run(dir.path(), &[&two[..], &["--max-steps", "15"]].concat());
    let resumed = run(dir.path(), &[&two[..], &["--max-steps", "35"]].concat());
    assert!(weights(&dir.path().join("run.safetensors")) == trained);
    assert!(
        weights(&dir.path().join("run.ema.safetensors")) == average,
        "another average after resuming on 2 workers"
    );
    assert_eq!(epochs_of(&resumed), epochs_of(&one));
    assert_eq!(
        resumed["test"]["pair_accuracy"],
        one["test"]["pair_accuracy"]
    );
}
