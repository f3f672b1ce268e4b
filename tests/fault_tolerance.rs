//! Training that loses nothing, with real processes and real signals: any number of workers,
//! workers killed (SIGKILL) or stopped (SIGSTOP) mid-epoch, replacements joining, the
//! coordinator killed and restarted from its checkpoint, SIGTERM and --resume auto. Every run
//! must end with the bytes of the uninterrupted run's weights.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use integration_tests::model_tensors as weights;
use integration_tests::{
    bin, children_of, mnist_run_files, read_results, run_with_limit, shared_dataset,
};

/// The run every test repeats: 3 epochs of 94 steps on 6,000 MNIST images, seed 3, batch 64.
fn configure(cmd: &mut Command, dir: &Path) {
    configure_run(cmd, dir, "3", "64");
}

fn configure_run(cmd: &mut Command, dir: &Path, seed: &str, batch: &str) {
    cmd.args(["--dataset", "mnist", "--epochs", "3"])
        .args([
            "--train-subset",
            "6000",
            "--val-pairs",
            "300",
            "--test-pairs",
            "300",
        ])
        .args(["--seed", seed, "--batch-size", batch, "--threads", "1"]);
    mnist_run_files(cmd, dir);
}

fn coordinator(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("coordinator"));
    configure(&mut cmd, dir);
    cmd.args(extra);
    cmd
}

fn succeed(cmd: &mut Command, what: &str) {
    let out = run_with_limit(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uninterrupted run's weights, trained once in this process (`--workers 0`).
fn reference() -> &'static Vec<(String, Vec<u8>)> {
    static REFERENCE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        succeed(
            &mut coordinator(dir.path(), &["--workers", "0"]),
            "reference",
        );
        weights(&dir.path().join("run.safetensors"))
    })
}

/// Waits until `path` exists (the first checkpoint: epoch 1 is done).
fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the coordinator exited ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a process, failing (not hanging) past a limit; returns its stderr.
fn wait_ok(child: Child, what: &str) -> String {
    let pid = child.id();
    let out = wait_with_limit(child, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} (pid {pid}) failed: {}\n{err}",
        out.status
    );
    err
}

fn wait_with_limit(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The membership events of a results file: (event, rank, cause).
fn events(dir: &Path) -> Vec<(String, u64, String)> {
    let r = read_results(&dir.join("run.json"));
    r["membership"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["rank"].as_u64().unwrap(),
                e["cause"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn spawned(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn zero_to_four_workers_end_with_identical_weights() {
    for workers in ["1", "2", "3", "4"] {
        let dir = tempfile::tempdir().unwrap();
        succeed(
            &mut coordinator(dir.path(), &["--workers", workers]),
            &format!("{workers} workers"),
        );
        assert_eq!(
            read_results(&dir.path().join("run.json"))["epochs"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(
            weights(&dir.path().join("run.safetensors")) == *reference(),
            "{workers} workers ended with other weights than --workers 0"
        );
    }
}

#[test]
fn a_worker_killed_mid_epoch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = spawned(&mut coordinator(dir.path(), &["--workers", "4"]));
    wait_for(&dir.path().join("run.safetensors"), &mut c);
    let workers = children_of(c.id());
    assert_eq!(workers.len(), 4, "{workers:?}");
    signal(workers[1], "KILL");
    wait_ok(c, "the coordinator");
    assert!(weights(&dir.path().join("run.safetensors")) == *reference());
    let lost: Vec<_> = events(dir.path())
        .into_iter()
        .filter(|e| e.0 == "lost")
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    // Either side may see the dead connection first (its inbound stream failing, or its
    // outbound stream closed when a task is sent); neither is a timeout.
    assert!(lost[0].2.contains("stream"), "{lost:?}");
    assert!(
        !lost[0].2.contains("within") && !lost[0].2.contains("read none"),
        "lost by a deadline: {lost:?}"
    );
}

fn remote_worker(addr: &str, extra: &[&str]) -> Child {
    spawned(
        Command::new(bin("worker"))
            .args(["--coordinator", &format!("http://{addr}"), "--threads", "1"])
            .args(["--reconnect-timeout", "60"])
            .env("SIAMESE_TOKEN", "fault-token-1234")
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .args(extra),
    )
}

/// A free port on 127.0.0.1 (bound and released: a restarted coordinator takes it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn waiting(dir: &Path, workers: &str, port: u16, extra: &[&str]) -> Child {
    spawned(
        coordinator(dir, &["--workers", workers, "--no-spawn"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("SIAMESE_TOKEN", "fault-token-1234")
            .args(extra),
    )
}

#[test]
fn two_workers_lost_at_different_steps_and_a_replacement_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = waiting(dir.path(), "4", port, &[]);
    let mut workers: Vec<Child> = (0..4).map(|_| remote_worker(&addr, &[])).collect();
    wait_for(&dir.path().join("run.safetensors"), &mut c);
    signal(workers[0].id(), "KILL");
    std::thread::sleep(Duration::from_millis(300));
    signal(workers[2].id(), "KILL");
    let replacement = remote_worker(&addr, &[]);
    wait_ok(c, "the coordinator");
    for (i, w) in workers.drain(..).enumerate() {
        if i == 1 || i == 3 {
            wait_ok(w, "a surviving worker");
        } else {
            let _ = wait_with_limit(w, Duration::from_secs(5));
        }
    }
    wait_ok(replacement, "the replacement");
    assert!(weights(&dir.path().join("run.safetensors")) == *reference());
    let e = events(dir.path());
    assert_eq!(e.iter().filter(|e| e.0 == "lost").count(), 2, "{e:?}");
    assert_eq!(e.iter().filter(|e| e.0 == "joined").count(), 5, "{e:?}");
}

/// Runs three workers with `extra`, stops (SIGSTOP) the third once the run has started, and
/// returns the causes of the losses, after checking that the run still ended with the
/// uninterrupted run's weights.
fn stop_one_of_three(extra: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--workers", "3"];
    args.extend_from_slice(extra);
    let mut c = spawned(&mut coordinator(dir.path(), &args));
    wait_for(&dir.path().join("run.safetensors"), &mut c);
    let workers = children_of(c.id());
    assert_eq!(workers.len(), 3);
    signal(workers[2], "STOP");
    let out = wait_with_limit(c, Duration::from_secs(300));
    // The coordinator kills a lost local worker; make sure nothing stays stopped.
    let _ = Command::new("kill")
        .args(["-CONT", &workers[2].to_string()])
        .status();
    let _ = Command::new("kill")
        .args(["-KILL", &workers[2].to_string()])
        .status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(weights(&dir.path().join("run.safetensors")) == *reference());
    events(dir.path())
        .into_iter()
        .filter(|e| e.0 == "lost")
        .map(|e| e.2)
        .collect()
}

#[test]
fn a_stopped_worker_is_declared_lost_after_the_step_timeout() {
    // Keepalive far beyond the step timeout, so that the step timeout is what notices.
    let lost = stop_one_of_three(&["--step-timeout", "5", "--keepalive", "600"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("within 5 s"), "{lost:?}");
}

#[test]
fn a_stopped_worker_is_declared_lost_by_the_keepalive_and_the_cause_says_so() {
    // The step timeout far beyond two keepalive periods, so that the PINGs are what notice.
    let lost = stop_one_of_three(&["--step-timeout", "600", "--keepalive", "1"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].contains("s after its last message") && lost[0].contains("keepalive"),
        "{lost:?}"
    );
}

#[test]
fn a_killed_coordinator_resumes_and_its_workers_come_back_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let extra = ["--resume", "auto", "--checkpoint-every", "40"];
    let mut first = waiting(dir.path(), "2", port, &extra);
    let workers: Vec<Child> = (0..2).map(|_| remote_worker(&addr, &[])).collect();
    wait_for(&dir.path().join("run.safetensors"), &mut first);
    let _ = first.kill();
    let _ = first.wait();
    let second = waiting(dir.path(), "2", port, &extra);
    let err = wait_ok(second, "the restarted coordinator");
    assert!(err.contains("resuming"), "{err}");
    for w in workers {
        let err = wait_ok(w, "a worker");
        assert!(err.contains("reconnecting"), "{err}");
    }
    assert!(weights(&dir.path().join("run.safetensors")) == *reference());
}

#[test]
fn sigterm_checkpoints_and_resume_auto_finishes_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run.safetensors");
    let extra = ["--workers", "0", "--resume", "auto"];
    let mut c = spawned(&mut coordinator(dir.path(), &extra));
    wait_for(&checkpoint, &mut c);
    std::thread::sleep(Duration::from_millis(300));
    signal(c.id(), "TERM");
    let out = wait_with_limit(c, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A later write that died halfway leaves its temporary file: the checkpoint is untouched.
    let before = std::fs::read(&checkpoint).unwrap();
    let mut tmp = checkpoint.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(PathBuf::from(tmp), &before[..before.len() / 2]).unwrap();
    succeed(&mut coordinator(dir.path(), &extra), "the resumed run");
    assert!(weights(&checkpoint) == *reference());
    let r = read_results(&dir.path().join("run.json"));
    let epochs: Vec<u64> = r["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
}

#[test]
fn a_checkpoint_of_another_run_is_refused_naming_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    succeed(
        &mut coordinator(dir.path(), &["--workers", "0", "--max-steps", "5"]),
        "a short run",
    );
    let checkpoint = dir.path().join("run.safetensors");
    let mut other = Command::new(bin("coordinator"));
    configure_run(&mut other, dir.path(), "9", "32");
    let out = run_with_limit(
        other.args(["--workers", "0", "--resume"]).arg(&checkpoint),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("another run")
            && err.contains("--seed is 9 here, 3 in the checkpoint")
            && err.contains("--batch-size is 32 here, 64 in the checkpoint"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sigterm_while_waiting_for_a_replacement_checkpoints_at_once_and_resumes_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run.safetensors");
    // The only worker lost, none respawned, and a join timeout far beyond the test's limits:
    // the step cannot finish, and only the signal can end the wait for a replacement.
    let extra = [
        "--workers",
        "1",
        "--join-timeout",
        "600",
        "--resume",
        "auto",
    ];
    let mut c = spawned(&mut coordinator(dir.path(), &extra));
    wait_for(&checkpoint, &mut c);
    let workers = children_of(c.id());
    assert_eq!(workers.len(), 1, "{workers:?}");
    signal(workers[0], "KILL");
    std::thread::sleep(Duration::from_secs(2));
    signal(c.id(), "TERM");
    let out = wait_with_limit(c, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    succeed(
        &mut coordinator(dir.path(), &["--workers", "0", "--resume", "auto"]),
        "the resumed run",
    );
    assert!(weights(&checkpoint) == *reference());
}
