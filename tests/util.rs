//! Helpers shared by the integration tests: finding the built binaries and the shared data,
//! running processes with a deadline.

pub mod deploy;
pub mod fake_coordinator;
pub mod fake_nccl;
pub mod fake_session;
pub mod fake_worker;
pub mod ops_util;
pub mod raw_grpc;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The folder holding the binaries of the profile the tests were built with.
pub fn bin_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary (`coordinator` or `worker`), built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --release --workspace`",
        path.display()
    );
    path
}

/// The shared real datasets beside the repository (`../shared/datasets/<name>`).
pub fn shared_dataset(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(name);
    assert!(dir.exists(), "real data expected at {}", dir.display());
    dir
}

/// Runs a command to completion, killing it after `limit`. Its output is read while it runs:
/// a child that writes more than a pipe holds (64 KiB) would otherwise block until killed.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let (status, late) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    if late {
        panic!(
            "{cmd:?} ran past {limit:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Every model tensor of a checkpoint, by name, with its bytes (Adam's `adam.*` moments and the
/// best epoch's `best.*` and the moving average's `ema.*` weights left out: they are not the
/// current weights).
pub fn model_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| {
            !["adam.", "best.", "ema."]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort();
    assert_eq!(out.len(), 12, "the siamese model has 12 tensors");
    out
}

/// Reads a results file written by a run.
pub fn read_results(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("results file is JSON")
}

/// The files of a run on real MNIST kept in `dir`: the data, `run.json` and the checkpoint
/// `run.safetensors` (what the tests that compare a run's bytes read back).
pub fn mnist_run_files<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(dir.join("run.json"))
        .arg("--checkpoint")
        .arg(dir.join("run.safetensors"))
}

/// Common flags of a quick run on a subset of real MNIST.
pub fn quick_run(cmd: &mut Command, dir: &Path, name: &str) {
    cmd.args([
        "--dataset",
        "mnist",
        "--val-pairs",
        "400",
        "--test-pairs",
        "400",
    ])
    .arg("--data-dir")
    .arg(shared_dataset("mnist"))
    .arg("--out")
    .arg(dir.join(format!("{name}.json")));
}

/// A coordinator waiting for `workers` remote workers; returns it and its address.
pub fn waiting_coordinator(dir: &Path, workers: usize, token: &str) -> (Child, String) {
    waiting_coordinator_with(dir, workers, token, &["--join-timeout", "60"])
}

/// As [`waiting_coordinator`], with more flags.
pub fn waiting_coordinator_with(
    dir: &Path,
    workers: usize,
    token: &str,
    extra: &[&str],
) -> (Child, String) {
    let addr_file = dir.join("addr");
    let mut cmd = Command::new(bin("coordinator"));
    quick_run(&mut cmd, dir, "remote");
    let child = cmd
        .args([
            "--workers",
            &workers.to_string(),
            "--no-spawn",
            "--token",
            token,
            "--epochs",
            "1",
        ])
        .args(["--train-subset", "3000"])
        .args(extra)
        .arg("--address-file")
        .arg(&addr_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(&addr_file) {
            Ok(addr) if !addr.is_empty() => return (child, addr),
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the coordinator never wrote its address");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Process ids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Field 4 of /proc/PID/stat, after the parenthesised command name, is the parent's pid.
        let after = stat.rsplit(')').next().unwrap_or("");
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            out.push(child);
        }
    }
    out
}
