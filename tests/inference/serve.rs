//! `coordinator serve` answering a stock Python grpcio client: health without the token, every
//! call with it, a wrong token and none refused, concurrent clients batched.

use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::bin;
use integration_tests::ops_util::{repo_root, venv_python, wait_for_text};

use crate::{arg, fixture, write_png};

#[test]
fn serve_answers_a_python_grpc_client_and_refuses_a_wrong_token() {
    let f = fixture();
    let dir = f.scratch.join("serve");
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut server = Command::new(bin("coordinator"))
        .args([
            "serve",
            "--weights",
            arg(&f.weights),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--gallery", arg(&f.gallery), "--threads", "1"])
        .arg("--address-file")
        .arg(&addr_file)
        .env("SIAMESE_TOKEN", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = wait_for_text(&addr_file, &mut server, Duration::from_secs(60));
    let labels = f.test.labels();
    // Two test images of one digit and two of different digits, past the gallery's.
    let same = (1000..1100)
        .flat_map(|i| (i + 1..1100).map(move |j| (i, j)))
        .find(|&(i, j)| labels[i] == labels[j])
        .unwrap();
    let different = (
        1000,
        (1001..1100).find(|&j| labels[j] != labels[1000]).unwrap(),
    );
    let png = |i: usize| {
        let path = dir.join(format!("{i}.png"));
        write_png(&f.test, i, &path);
        path.display().to_string()
    };
    let query = format!("0042-{}.png", f.test.label(42));
    let client = repo_root().join("tests/python/inference_client.py");
    let out = Command::new(venv_python())
        .arg(&client)
        .args(["check", "--addr", &addr, "--token", "s3cret"])
        .args(["--same", &png(same.0), &png(same.1)])
        .args(["--different", &png(different.0), &png(different.1)])
        .args(["--query", arg(&f.gallery.join(&query))])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["health"], "SERVING");
    assert_eq!(r["info"]["height"], 28);
    assert_eq!(r["info"]["embedding_width"], 10);
    assert_eq!(r["info"]["gallery_size"], crate::GALLERY as u64);
    assert_eq!(r["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(r["same"]["same"], true, "{r}");
    assert_eq!(r["different"]["same"], false, "{r}");
    assert_eq!(r["search"][0], query, "{r}");
    assert_eq!(r["wrong_token"], "UNAUTHENTICATED");
    assert_eq!(r["no_token"], "UNAUTHENTICATED");
    assert_eq!(r["bad_image"], "INVALID_ARGUMENT");

    // A short load at 1, 8 and 64 concurrent clients: every request answered (the figures in
    // docs/benchmarks.md come from the same script with more requests).
    let out = Command::new(venv_python())
        .arg(&client)
        .args([
            "load",
            "--addr",
            &addr,
            "--token",
            "s3cret",
            "--image",
            &png(1000),
        ])
        .args(["--concurrency", "1", "8", "64", "--requests", "300"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("serve load:\n{stdout}");
    for line in stdout.lines() {
        let level: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(level["errors"], 0, "{line}");
        assert_eq!(level["requests"], 300, "{line}");
        assert!(level["requests_per_s"].as_f64().unwrap() > 10.0, "{line}");
    }
    assert_eq!(stdout.lines().count(), 3);

    // SIGTERM stops it cleanly, logging how the batching went.
    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let done = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("inference server stopped"), "{stderr}");
}

#[test]
fn serve_without_a_token_refuses_to_start_unless_told_to_serve_everyone() {
    let f = fixture();
    let out = Command::new(bin("coordinator"))
        .args([
            "serve",
            "--weights",
            arg(&f.weights),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("SIAMESE_TOKEN")
        .env_remove("SIAMESE_TOKEN_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("serve needs a token"), "{err}");
}
