//! The worker's command line explains itself and fails clearly without a coordinator.

use std::process::Command;

#[test]
fn help_describes_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--coordinator",
        "--token",
        "--device",
        "--threads",
        "--data-dir",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn cuda_without_the_feature_says_how_to_build_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "--device",
            "cuda:0",
            "--connect-timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn unreachable_coordinator_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "--connect-timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:9") && !err.contains("panicked"),
        "{err}"
    );
}
