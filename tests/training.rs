//! Single-process training on real MNIST reaches the accuracy the model should.

use std::process::Command;
use std::time::Duration;

use integration_tests::{bin, read_results, run_with_limit, shared_dataset};

#[test]
fn trains_on_real_mnist_subset_to_90_percent_pair_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args([
                "--dataset",
                "mnist",
                "--epochs",
                "6",
                "--train-subset",
                "24000",
            ])
            .args([
                "--val-pairs",
                "2000",
                "--test-pairs",
                "2000",
                "--threads",
                "2",
            ])
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(&out),
        Duration::from_secs(300),
    );
    assert!(
        output.status.success(),
        "coordinator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = read_results(&out);
    assert_eq!(r["dataset"], "mnist");
    assert_eq!(r["epochs"].as_array().unwrap().len(), 6);
    assert_eq!(r["config"]["seed"], 1);
    let test = &r["test"];
    assert_eq!(test["pairs"], 2000);
    let acc = test["pair_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.90, "test pair accuracy {acc}");
    assert!(test["roc_auc"].as_f64().unwrap() > 0.95);
    assert!(test["ncm_accuracy"].as_f64().unwrap() > 0.85);
    assert!(test["time_s"].as_f64().unwrap() > 0.0);
    // The final weights were checkpointed beside the results.
    assert!(out.with_extension("safetensors").exists());
}

#[test]
fn corrupt_dataset_is_reported_with_the_file_name_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A label file with the magic number of an image file.
    for name in [
        "train-images-idx3-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::copy(
            shared_dataset("mnist").join(format!("{name}.gz")),
            dir.path().join(format!("{name}.gz")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        [0, 0, 8, 3, 0, 0, 0, 1, 7],
    )
    .unwrap();
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["--dataset", "mnist", "--epochs", "1"])
            .arg("--data-dir")
            .arg(dir.path()),
        Duration::from_secs(60),
    );
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("train-labels-idx1-ubyte") && err.contains("magic"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn output_files_that_clash_or_cannot_be_written_are_refused_before_the_data_load() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-data");
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // A checkpoint from an earlier run, which a results file of the same name would replace.
    std::fs::write(d("run.safetensors"), b"earlier weights").unwrap();
    std::fs::write(d("plain"), b"a file").unwrap();
    for (flags, want) in [
        (
            vec!["--out".into(), d("run.safetensors")],
            "--out (the results) and the checkpoint (beside --out) are the same file",
        ),
        (
            vec![
                "--out".into(),
                d("run.json"),
                "--scores".into(),
                d("run.safetensors"),
            ],
            "the checkpoint (beside --out) and --scores are the same file",
        ),
        (
            vec![
                "--out".into(),
                d("r.json"),
                "--checkpoint".into(),
                d("sub/../r.json"),
            ],
            "--out (the results) and --checkpoint are the same file",
        ),
        (
            vec!["--out".into(), d("")],
            "is a folder; give a file's path",
        ),
        (
            vec!["--out".into(), d("plain/run.json")],
            "plain is a file, not a folder",
        ),
    ] {
        let out = run_with_limit(
            Command::new(bin("coordinator"))
                .args(["--workers", "0", "--dataset", "mnist", "--data-dir"])
                .arg(&absent)
                .args(&flags),
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!absent.exists(), "{flags:?} looked for the data: {err}");
        assert_eq!(
            std::fs::read(d("run.safetensors")).unwrap(),
            b"earlier weights",
            "{flags:?}"
        );
    }
}

/// A restarted pod or requeued job runs `--resume auto`: without a fixed checkpoint path it
/// would start afresh under a new, clock-named file every time, so it is refused, as is a
/// `--resume PATH` that is not there, before the data is loaded (or downloaded).
#[test]
fn a_resume_that_cannot_find_its_checkpoint_is_refused_before_the_data_load() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-data");
    let missing = dir.path().join("missing.safetensors");
    for (flags, want) in [
        (
            vec!["--resume", "auto"],
            "--resume auto needs --checkpoint FILE (or --out FILE)",
        ),
        (
            vec!["--resume", missing.to_str().unwrap()],
            "missing.safetensors does not exist (--resume PATH needs one",
        ),
    ] {
        let out = run_with_limit(
            Command::new(bin("coordinator"))
                .current_dir(dir.path())
                .args(["--workers", "0", "--dataset", "mnist", "--data-dir"])
                .arg(&absent)
                .args(&flags)
                .env_remove("SIAMESE_OUT")
                .env_remove("SIAMESE_CHECKPOINT"),
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!absent.exists(), "{flags:?} looked for the data: {err}");
    }
}

/// A job restarted without --resume would start afresh and, at its first checkpoint, write over
/// the progress it could have continued: refused unless --overwrite says so.
#[test]
fn a_fresh_run_over_an_existing_checkpoint_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let checkpoint = dir.path().join("run.safetensors");
    let run = |extra: &[&str]| {
        run_with_limit(
            Command::new(bin("coordinator"))
                .args(["--workers", "0", "--threads", "1", "--dataset", "mnist"])
                .args(["--max-steps", "2", "--train-subset", "640"])
                .args(["--val-pairs", "10", "--test-pairs", "10", "--data-dir"])
                .arg(shared_dataset("mnist"))
                .arg("--out")
                .arg(&out)
                .args(extra),
            Duration::from_secs(60),
        )
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let saved = std::fs::read(&checkpoint).unwrap();
    let again = run(&["--seed", "2"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{err}");
    assert!(
        err.contains(
            "run.safetensors already exists and this run would start afresh and replace it"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), saved);
    let over = run(&["--seed", "2", "--overwrite"]);
    assert!(
        over.status.success(),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );
    assert_ne!(std::fs::read(&checkpoint).unwrap(), saved);
}
