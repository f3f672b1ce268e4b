//! Workers with network addresses of their own: the coordinator and two workers, each in a
//! network namespace of its own joined by a Linux bridge, train with every weight and gradient
//! in the gRPC messages (`--no-shm`: the namespaces still share the filesystem, so a worker could
//! otherwise map the coordinator's shared-memory file). The run must end with the bytes of the
//! same run in one process (`--workers 0`).
//!
//! Needs root and iproute2 (`ip netns`, veth, bridge). Where they are missing the test fails
//! and says so: a passing test must mean the cross-namespace path was exercised.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::model_tensors;
use integration_tests::{bin, mnist_run_files, read_results, run_with_limit, shared_dataset};

/// The coordinator's address on the bridge; worker k gets 10.78.0.(10 + k).
const COORDINATOR_IP: &str = "10.78.0.2";
const TOKEN: &str = "netns-test-token-0123456789";

/// Runs `ip` with `args`, returning its output; panics naming the command when it cannot run.
fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}` (iproute2 needed): {e}", args.join(" ")))
}

/// Runs `ip` with `args` and fails the test, with its stderr, when it does not succeed.
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A bridge and one namespace per process on it; everything is removed when dropped, the
/// processes still inside the namespaces killed first, whether the test passed or not.
struct Network {
    bridge: String,
    namespaces: Vec<String>,
}

impl Network {
    /// The bridge and namespaces `<prefix>-c` (the coordinator) and `<prefix>-w1`..`-wN`.
    fn new(workers: usize) -> Network {
        // Unique per test process, and short enough for interface names (15 bytes at most).
        let prefix = format!("snt{}", std::process::id() % 100_000);
        let mut net = Network {
            bridge: format!("{prefix}-br"),
            namespaces: Vec::new(),
        };
        let first = format!("{prefix}-c");
        let out = ip(&["netns", "add", &first]);
        assert!(
            out.status.success(),
            "this test needs network namespaces (root and iproute2): `ip netns add {first}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        net.namespaces.push(first);
        ip_ok(&["link", "add", &net.bridge, "type", "bridge"]);
        ip_ok(&["link", "set", &net.bridge, "up"]);
        for k in 1..=workers {
            let ns = format!("{prefix}-w{k}");
            ip_ok(&["netns", "add", &ns]);
            net.namespaces.push(ns);
        }
        for (i, ns) in net.namespaces.iter().enumerate() {
            let addr = match i {
                0 => format!("{COORDINATOR_IP}/24"),
                k => format!("10.78.0.{}/24", 10 + k),
            };
            let host_end = format!("{ns}-h");
            ip_ok(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip_ok(&["link", "set", &host_end, "master", &net.bridge, "up"]);
            ip_ok(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// A command that runs `program` inside namespace `i` (0: the coordinator's).
    fn command(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespaces[i]])
            .arg(program);
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let pids = ip(&["netns", "pids", ns]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            // Deleting the namespace deletes its veth end, and with it the bridge's end.
            let _ = ip(&["netns", "del", ns]);
            let _ = ip(&["link", "del", &format!("{ns}-h")]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// The run both sides train: 40 steps of 64 pairs on 2,560 MNIST images, seed 5.
fn configure(cmd: &mut Command, dir: &Path, workers: &str) {
    cmd.args(["--dataset", "mnist", "--epochs", "1", "--workers", workers])
        .args([
            "--train-subset",
            "2560",
            "--batch-size",
            "64",
            "--seed",
            "5",
        ])
        .args([
            "--val-pairs",
            "200",
            "--test-pairs",
            "200",
            "--threads",
            "1",
        ]);
    mnist_run_files(cmd, dir);
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn workers_in_their_own_network_namespaces_train_the_bytes_of_one_process() {
    let net = Network::new(2);
    let reference = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    configure(&mut cmd, reference.path(), "0");
    assert_success(
        &run_with_limit(&mut cmd, Duration::from_secs(300)),
        "the --workers 0 run",
    );

    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = net.command(0, &bin("coordinator"));
    configure(&mut coordinator, dir.path(), "2");
    coordinator
        .args(["--no-spawn", "--no-shm", "--join-timeout", "120"])
        .args(["--listen", &format!("{COORDINATOR_IP}:50051")])
        .env("SIAMESE_TOKEN", TOKEN);
    // The workers start first and keep trying until the coordinator listens.
    let workers: Vec<_> = (1..=2)
        .map(|k| {
            net.command(k, &bin("worker"))
                .args(["--coordinator", &format!("http://{COORDINATOR_IP}:50051")])
                .args(["--threads", "1", "--connect-timeout", "120"])
                .arg("--data-dir")
                .arg(shared_dataset("mnist"))
                .env("SIAMESE_TOKEN", TOKEN)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting worker {k} in its namespace: {e}"))
        })
        .collect();
    let out = run_with_limit(&mut coordinator, Duration::from_secs(300));
    for mut w in workers {
        // They leave when the run ends; one still there after a minute is killed.
        for _ in 0..600 {
            if !matches!(w.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_success(&out, "the coordinator in its namespace");

    // Each worker reached the coordinator from its own address on the bridge.
    let results = read_results(&dir.path().join("run.json"));
    let mut peers: Vec<String> = results["timing"]["per_worker"]
        .as_array()
        .expect("timing.per_worker in the results")
        .iter()
        .map(|w| w["peer"].as_str().unwrap_or_default().to_string())
        .collect();
    peers.sort();
    assert_eq!(peers.len(), 2, "{peers:?}");
    for (k, peer) in peers.iter().enumerate() {
        let ip = format!("10.78.0.{}:", 11 + k);
        assert!(
            peer.contains(&ip),
            "worker {k} should have joined from {ip}: {peers:?}"
        );
    }
    assert!(
        model_tensors(&dir.path().join("run.safetensors"))
            == model_tensors(&reference.path().join("run.safetensors")),
        "2 workers across network namespaces ended with other weights than --workers 0"
    );
}
