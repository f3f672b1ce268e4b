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
