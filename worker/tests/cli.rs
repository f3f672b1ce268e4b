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

/// A URL the worker could never connect to is refused at once, not retried for the whole
/// --connect-timeout as if the coordinator were only not up yet.
#[test]
fn a_malformed_coordinator_url_is_refused_before_connecting() {
    for (url, want) in [
        (
            "10.0.0.5:50051",
            "has no scheme: write http://10.0.0.5:50051",
        ),
        ("ftp://127.0.0.1:9", "has the scheme ftp"),
        ("http://127.0.0.1:99999", "has the port \"99999\""),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_worker"))
            // A default window would make a retried URL run for a minute; the refusal is
            // immediate, so the test asserts the exit code and the message, not a time.
            .args(["--coordinator", url, "--token", "0123456789abcdef"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(
            err.contains("--coordinator") && err.contains(want),
            "{url}: {err}"
        );
    }
}

/// The cause of an error is said once, though the error both names it and keeps it as its
/// source.
#[test]
fn a_missing_token_file_is_reported_with_its_cause_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["--coordinator", "http://127.0.0.1:9"])
        .args(["--token-file", "/nonexistent/token"])
        .env_remove("SIAMESE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("reading the token file /nonexistent/token"),
        "{err}"
    );
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// A RUST_LOG that does not parse is reported, not silently replaced by the default level.
#[test]
fn a_bad_rust_log_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["--coordinator", "http://127.0.0.1:9"])
        .args(["--token-file", "/nonexistent/token"])
        .env("RUST_LOG", "[[[")
        .env_remove("SIAMESE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "RUST_LOG=\"[[[\" is not a log filter (invalid filter directive); logging at info"
        ),
        "{err}"
    );
}
