//! The command line explains itself and refuses bad input with a clear message.

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coordinator"))
}

#[test]
fn help_describes_the_main_flags() {
    let out = coordinator().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dataset",
        "--data-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--threads",
        "--out",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn unknown_dataset_is_refused_with_the_choices() {
    let out = coordinator()
        .args(["--dataset", "imagenet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imagenet") && err.contains("cifar10"), "{err}");
}

#[test]
fn numeric_flags_out_of_range_are_refused_naming_the_flag_before_any_work() {
    for (flag, value, says) in [
        ("--test-pairs", "0", "below the least allowed"),
        ("--join-timeout", "99999999999999999", "outside 1 to 86400"),
        ("--workers", "5000000000", "outside 0 to 1024"),
        ("--lr", "nan", "not a learning rate"),
        ("--nccl-timeout", "0", "outside 1 to 86400"),
        ("--batch-size", "0", "not in 1..=65536"),
    ] {
        let out = coordinator()
            .args(["--dataset", "mnist", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_train_subset_too_small_to_pair_is_refused_naming_the_flag_before_any_worker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/datasets/mnist");
    let out = coordinator()
        .args(["--dataset", "mnist", "--data-dir", data, "--workers", "2"])
        .args(["--train-subset", "10", "--epochs", "1", "--out"])
        .arg(dir.path().join("run.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--train-subset 10 leaves 10 training images")
            && err.contains("same-class pairs need at least 2"),
        "{err}"
    );
    // No worker started: none reported the coordinator's failure.
    assert!(!err.contains("[rank"), "{err}");
}
