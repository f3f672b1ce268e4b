//! The cluster over real processes on 127.0.0.1: equivalence with one worker, local spawning,
//! remote workers, and what the coordinator refuses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{
    bin, children_of, quick_run, read_results, run_with_limit, shared_dataset, waiting_coordinator,
};

fn load_weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn train_steps_with(dir: &Path, workers: usize, seed: u64, aggregation: &str) -> PathBuf {
    train_steps_on(dir, workers, seed, aggregation, None)
}

/// As [`train_steps_with`], the kernels forced to `kernels` (`SIAMESE_KERNELS`) where given, in
/// the coordinator and the workers it spawns.
fn train_steps_on(
    dir: &Path,
    workers: usize,
    seed: u64,
    aggregation: &str,
    kernels: Option<&str>,
) -> PathBuf {
    let name = format!(
        "w{workers}-s{seed}-{aggregation}-{}",
        kernels.unwrap_or("detected")
    );
    let mut cmd = Command::new(bin("coordinator"));
    if let Some(kernels) = kernels {
        cmd.env("SIAMESE_KERNELS", kernels);
    }
    quick_run(&mut cmd, dir, &name);
    cmd.args([
        "--workers",
        &workers.to_string(),
        "--max-steps",
        "20",
        "--train-subset",
        "6000",
        "--threads",
        "1",
    ])
    .args(["--seed", &seed.to_string(), "--aggregation", aggregation])
    .args(["--digest-every", "7"]);
    let out = run_with_limit(&mut cmd, Duration::from_secs(180));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The in-process run reports its one replica.
    assert_eq!(
        read_results(&dir.join(format!("{name}.json")))["workers"],
        workers.max(1)
    );
    dir.join(format!("{name}.safetensors"))
}

/// Every tensor's values as bit patterns, so equality means identical bytes.
fn weight_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    load_weights(path)
        .into_iter()
        .map(|(name, v)| (name, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn replicas_stepping_adam_themselves_match_the_coordinators_optimizer_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let central = train_steps_with(dir.path(), 3, 1, "coordinator");
    let replicated = train_steps_with(dir.path(), 3, 1, "allreduce");
    let r = read_results(&replicated.with_extension("json"));
    assert_eq!(r["aggregation"], "allreduce");
    assert_eq!(
        weight_bits(&central),
        weight_bits(&replicated),
        "3 workers: the coordinator's Adam and the replicas' Adam must end with the same bytes"
    );
}

#[test]
fn one_worker_and_the_in_process_run_end_with_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let in_process = train_steps_with(dir.path(), 0, 1, "allreduce");
    assert_eq!(
        read_results(&in_process.with_extension("json"))["aggregation"],
        "local"
    );
    let one = train_steps_with(dir.path(), 1, 1, "allreduce");
    assert_eq!(weight_bits(&in_process), weight_bits(&one));
}

/// A CPU without AVX2 runs the portable kernels; they must train the bytes the detected (AVX2
/// or AVX-512) kernels train, or a cluster mixing such CPUs, or a run resumed on one, diverges.
#[test]
fn the_portable_kernels_train_the_bytes_of_the_detected_ones() {
    let dir = tempfile::tempdir().unwrap();
    let detected = train_steps_on(dir.path(), 0, 2, "allreduce", None);
    for workers in [0, 2] {
        let portable = train_steps_on(dir.path(), workers, 2, "allreduce", Some("portable"));
        assert_eq!(
            weight_bits(&detected),
            weight_bits(&portable),
            "{workers} workers on the portable kernels"
        );
    }
}

/// The trained weights' bits of one step of `run_args`, in one process and with one worker
/// whose connection misses two keepalive PINGs after 2 s: equal when the worker stays.
fn one_step_in_process_and_on_one_worker(name: &str, run_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let run = |workers: &str, extra: &[&str]| {
        let name = format!("{name}-{workers}");
        let mut cmd = Command::new(bin("coordinator"));
        quick_run(&mut cmd, dir.path(), &name);
        cmd.args(["--workers", workers, "--threads", "1", "--max-steps", "1"])
            .args(run_args)
            .args(extra);
        let out = run_with_limit(&mut cmd, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "--workers {workers}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        weight_bits(&dir.path().join(format!("{name}.safetensors")))
    };
    let in_process = run("0", &[]);
    let one = run("1", &["--keepalive", "1", "--join-timeout", "30"]);
    assert_eq!(in_process, one);
}

/// A worker answers its connection's keepalive PINGs between tasks only, so a step's share
/// computed as one task longer than two PINGs (here one of 32,768 pairs, 4-9 s, against a
/// 1 s `--keepalive`) lost its worker. The coordinator cuts the share into small tasks; the
/// tree adds them into the bytes of the in-process run.
#[test]
fn a_share_longer_than_two_keepalive_pings_keeps_its_worker_and_the_bytes() {
    one_step_in_process_and_on_one_worker(
        "big-batch",
        &["--batch-size", "32768", "--train-subset", "40000"],
    );
}

/// A micro-batch is one backward call and cannot be cut, so a task of one 16,384-pair
/// micro-batch computes for about 4 s (3,500-4,000 pairs/s here) against a 1 s `--keepalive`:
/// the worker computes it off the thread that serves its connection, which keeps answering
/// PINGs, and the run ends with the in-process run's bytes.
#[test]
fn a_micro_batch_longer_than_two_keepalive_pings_keeps_its_worker_and_the_bytes() {
    one_step_in_process_and_on_one_worker(
        "big-micro-batch",
        &[
            "--batch-size",
            "16384",
            "--micro-batch",
            "16384",
            "--train-subset",
            "20000",
        ],
    );
}

/// A RUST_LOG that does not parse is said once, by the coordinator, and not again by each of
/// its local workers, which log at the coordinator's level instead.
#[test]
fn a_bad_rust_log_is_reported_once_for_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    quick_run(&mut cmd, dir.path(), "bad-log");
    cmd.args([
        "--workers",
        "2",
        "--max-steps",
        "2",
        "--train-subset",
        "640",
    ])
    .args(["--threads", "1"])
    .env("RUST_LOG", "foo=bar=baz");
    let out = run_with_limit(&mut cmd, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warning = "RUST_LOG=\"foo=bar=baz\" is not a log filter";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
}

fn pid_of(peer: &str) -> u32 {
    // "host:pid at 127.0.0.1:port"
    peer.split_whitespace()
        .next()
        .and_then(|h| h.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

#[test]
fn four_local_workers_train_and_leave_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    quick_run(&mut cmd, dir.path(), "four");
    cmd.args([
        "--workers",
        "4",
        "--epochs",
        "2",
        "--train-subset",
        "12000",
        "--threads",
        "1",
    ]);
    let out = run_with_limit(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_results(&dir.path().join("four.json"));
    assert_eq!(r["workers"], 4);
    assert_eq!(r["aggregation"], "allreduce");
    let per_worker = r["timing"]["per_worker"].as_array().unwrap();
    assert_eq!(per_worker.len(), 4);
    let acc = r["test"]["pair_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.90, "pair accuracy {acc}");
    for w in per_worker {
        assert!(w["steps"].as_u64().unwrap() > 0);
        let pid = pid_of(w["peer"].as_str().unwrap());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "worker process {pid} is still running"
        );
    }
}

fn worker(addr: &str, token: &str, data: &Path) -> Command {
    let mut cmd = Command::new(bin("worker"));
    cmd.args([
        "--coordinator",
        &format!("http://{addr}"),
        "--token",
        token,
        "--threads",
        "1",
    ])
    .arg("--data-dir")
    .arg(data);
    cmd
}

fn wait_success(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed:\n{err}");
    err
}

#[test]
fn remote_workers_join_a_waiting_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator(dir.path(), 2, "s3cret-token-0123456789");
    let workers: Vec<Child> = (0..2)
        .map(|_| {
            worker(&addr, "s3cret-token-0123456789", &shared_dataset("mnist"))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_success(coordinator, "coordinator");
    for w in workers {
        wait_success(w, "worker");
    }
    let r = read_results(&dir.path().join("remote.json"));
    assert_eq!(r["workers"], 2);
    assert!(r["test"]["pair_accuracy"].as_f64().unwrap() > 0.6);
}

#[test]
fn wrong_token_and_different_data_are_refused_while_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator(dir.path(), 2, "right-token-0123456789");
    let bad_token = run_with_limit(
        &mut worker(&addr, "wrong-token-0123456789", &shared_dataset("mnist")),
        Duration::from_secs(60),
    );
    assert!(!bad_token.status.success());
    let err = String::from_utf8_lossy(&bad_token.stderr);
    assert!(err.contains("wrong token"), "{err}");
    // Fashion-MNIST's files under the names MNIST expects: same format, other data.
    let other = run_with_limit(
        &mut worker(
            &addr,
            "right-token-0123456789",
            &shared_dataset("fashion-mnist"),
        ),
        Duration::from_secs(60),
    );
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("data differs") && err.contains("different files"),
        "{err}"
    );
    let bad_rank = run_with_limit(
        worker(&addr, "right-token-0123456789", &shared_dataset("mnist")).args(["--rank", "7"]),
        Duration::from_secs(60),
    );
    assert!(!bad_rank.status.success());
    let err = String::from_utf8_lossy(&bad_rank.stderr);
    assert!(err.contains("rank 7 is out of range"), "{err}");
    let good: Vec<Child> = (0..2)
        .map(|_| {
            worker(&addr, "right-token-0123456789", &shared_dataset("mnist"))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_success(coordinator, "coordinator");
    for w in good {
        wait_success(w, "worker");
    }
    assert_eq!(read_results(&dir.path().join("remote.json"))["workers"], 2);
}

#[test]
fn interrupting_the_coordinator_leaves_no_worker_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    quick_run(&mut cmd, dir.path(), "interrupted");
    let mut coordinator = cmd
        .args(["--workers", "2", "--epochs", "50", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = coordinator.id();
    let start = Instant::now();
    let workers = loop {
        let found = children_of(pid);
        if found.len() == 2 || start.elapsed() > Duration::from_secs(30) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        workers.len(),
        2,
        "the coordinator did not start two workers"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = coordinator.wait().unwrap();
    assert!(
        !status.success(),
        "an interrupted run must not report success"
    );
    for w in workers {
        assert!(
            !Path::new(&format!("/proc/{w}")).exists(),
            "worker {w} outlived the coordinator"
        );
    }
}

/// Cluster flags that cannot work are refused, naming them, before the dataset is looked for:
/// the data folder here does not exist, so a check made after the data load would fail on the
/// missing files (or the download) instead.
#[test]
fn cluster_flags_that_cannot_work_are_refused_before_the_data_load() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-data");
    let ca = dir.path().join("ca.pem");
    // Only the PEM framing is looked at before the data load.
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a folder").unwrap();
    let (pem, plain) = (pem.to_str().unwrap(), plain.to_str().unwrap());
    let remote = [
        "--workers",
        "2",
        "--no-spawn",
        "--token",
        "0123456789abcdef",
    ];
    fn with<'a>(remote: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [remote, extra].concat()
    }
    let address_under_a_file = format!("{plain}/address");
    for (flags, want) in [
        (
            &["--workers", "2", "--min-workers", "3"][..],
            "--min-workers 3 must be between 1 and --workers 2",
        ),
        (
            &["--workers", "2", "--no-spawn"][..],
            "--no-spawn needs a token for the remote workers",
        ),
        (
            &[
                "--workers",
                "2",
                "--no-spawn",
                "--respawn",
                "--token",
                "0123456789abcdef",
            ][..],
            "--respawn starts local workers; it cannot go with --no-spawn",
        ),
        (
            &["--workers", "2", "--aggregation", "nccl"][..],
            "--aggregation nccl all-reduces on GPUs",
        ),
        (
            &["--workers", "2", "--tls-client-ca", ca.to_str().unwrap()][..],
            "mutual TLS (--tls-client-ca) needs a client certificate for every worker",
        ),
        (
            &["--workers", "2", "--token-file", "/nonexistent/token"][..],
            "reading the token file /nonexistent/token",
        ),
        (
            &with(
                &remote,
                &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", pem],
            )[..],
            "reading --tls-cert /nonexistent/cert.pem",
        ),
        (
            &with(&remote, &["--tls-cert", pem, "--tls-key", plain])[..],
            "is not a PEM file (no -----BEGIN line)",
        ),
        (
            &[
                "--workers",
                "2",
                "--tls-cert",
                pem,
                "--tls-key",
                pem,
                "--tls-ca",
                "/nonexistent/ca.pem",
            ][..],
            "reading --tls-ca /nonexistent/ca.pem",
        ),
        (
            &with(&remote, &["--address-file", &address_under_a_file])[..],
            "plain is a file, not a folder",
        ),
    ] {
        let out = run_with_limit(
            Command::new(bin("coordinator"))
                .args(["--dataset", "mnist", "--data-dir"])
                .arg(&absent)
                .arg("--out")
                .arg(dir.path().join("run.json"))
                .args(flags)
                .env_remove("SIAMESE_TOKEN")
                .env_remove("SIAMESE_TOKEN_FILE"),
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!absent.exists(), "{flags:?} looked for the data: {err}");
    }
}
