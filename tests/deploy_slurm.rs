//! Slurm, live: deploy/slurm/local-cluster.sh starts a single-node Slurm of this test's own
//! (munged, slurmctld, slurmd on free ports, in a temporary folder), `sbatch --test-only`
//! accepts both batch scripts, and deploy/slurm/train.sbatch trains with `--ntasks=3` (three
//! workers, the coordinator in the batch step): once straight through, and once signalled with
//! SIGTERM mid-run as `--signal=B:TERM@120` does before a time limit, after which the job
//! requeues itself and the requeued job ends with the same weights, byte for byte.
//! Needs root, Slurm and munge (`scripts/deploy-test-setup.sh`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::deploy::{
    RUN_FLAGS, RUN_STEPS, check_results, checkpoint_steps, datasets_root, model_tensors, poll,
    repo_root, require, run_ok,
};
use integration_tests::{bin, bin_dir, run_with_limit, shared_dataset};

/// A private single-node Slurm; stopped, its jobs cancelled and its folder removed on drop,
/// whether the test passed or not.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn up() -> Cluster {
        for tool in ["munged", "slurmctld", "slurmd", "sbatch", "scontrol"] {
            require(tool);
        }
        let cluster = Cluster {
            dir: tempfile::tempdir().expect("temporary folder"),
            port: free_port_pair(),
        };
        run_ok(
            &mut cluster.script("up"),
            "local-cluster.sh up",
            Duration::from_secs(90),
        );
        cluster
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn script(&self, action: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("deploy/slurm/local-cluster.sh"))
            .arg(action)
            .env("SIAMESE_SLURM_DIR", self.dir.path())
            .env("SIAMESE_SLURM_PORT", self.port.to_string());
        cmd
    }

    /// A Slurm client command talking to this cluster.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }

    /// Submits `script` from `workdir`, where its output and run folders go.
    fn submit(&self, script: &str, workdir: &Path, sbatch_args: &[&str], args: &[&str]) -> String {
        let out = run_ok(
            self.client("sbatch")
                .arg("--parsable")
                .args(sbatch_args)
                .arg(repo_root().join("deploy/slurm").join(script))
                .args(args)
                .current_dir(workdir)
                .env("SIAMESE_BIN_DIR", bin_dir())
                .env("SIAMESE_DATA_DIR", datasets_root()),
            "sbatch",
            Duration::from_secs(30),
        );
        out.trim().to_string()
    }

    /// The job's fields as `scontrol show job -o` prints them.
    fn job(&self, id: &str) -> String {
        let out = run_with_limit(
            self.client("scontrol").args(["show", "job", "-o", id]),
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn field(&self, id: &str, name: &str) -> String {
        let job = self.job(id);
        job.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_string()
    }

    /// Waits for the job to end; returns its final state.
    fn wait_done(&self, id: &str, limit: Duration) -> String {
        poll(&format!("job {id} to end"), limit, || {
            let state = self.field(id, "JobState");
            match state.as_str() {
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "" => None,
                _ => Some(state),
            }
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nothing here may panic: a panic while a failed test unwinds would abort the process.
        let queued = || {
            self.client("squeue")
                .args(["-h", "-o", "%i"])
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        // Cancelling first lets slurmd end the jobs' processes before it stops itself.
        let jobs = queued();
        for job in jobs.split_whitespace() {
            let _ = self.client("scancel").arg(job).status();
        }
        let start = std::time::Instant::now();
        while !queued().trim().is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.script("clean").stdout(Stdio::null()).status();
    }
}

/// A free TCP port whose successor is free too (slurmctld's and slurmd's).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = first.local_addr() else {
            continue;
        };
        let port = addr.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free consecutive ports on 127.0.0.1");
}

fn job_log(workdir: &Path, id: &str) -> String {
    std::fs::read_to_string(workdir.join(format!("siamese-{id}.out"))).unwrap_or_default()
}

#[test]
fn train_sbatch_trains_and_a_sigterm_mid_run_requeues_it_to_the_same_weights() {
    let cluster = Cluster::up();
    let limit = Duration::from_secs(240);

    // Both scripts' directives are accepted (the GPU one on the node's paper GPU).
    for (script, ntasks) in [
        ("train.sbatch", "--ntasks=3"),
        ("train-gpu.sbatch", "--ntasks=1"),
    ] {
        run_ok(
            cluster
                .client("sbatch")
                .args(["--test-only", ntasks])
                .arg(repo_root().join("deploy/slurm").join(script)),
            &format!("sbatch --test-only {script}"),
            Duration::from_secs(30),
        );
    }

    let work = tempfile::tempdir().unwrap();
    let sbatch = ["--ntasks=3", "--cpus-per-task=1"];
    let straight = cluster.submit("train.sbatch", work.path(), &sbatch, &RUN_FLAGS);
    let state = cluster.wait_done(&straight, limit);
    let log = job_log(work.path(), &straight);
    assert_eq!(state, "COMPLETED", "job {straight}:\n{log}");
    let run = work.path().join(format!("runs/siamese-{straight}"));
    let results = check_results(&run.join("results.json"));
    assert_eq!(
        results["workers"].as_u64(),
        Some(3),
        "{}",
        results["workers"]
    );
    let reference = model_tensors(&run.join("checkpoint.safetensors"));

    let interrupted = cluster.submit("train.sbatch", work.path(), &sbatch, &RUN_FLAGS);
    let run = work.path().join(format!("runs/siamese-{interrupted}"));
    let checkpoint = run.join("checkpoint.safetensors");
    let at = poll("the checkpoint at step 200", limit, || {
        checkpoint_steps(&checkpoint).filter(|&s| s >= 200)
    });
    assert!(
        at < RUN_STEPS,
        "the run ended before it could be interrupted"
    );
    // What --signal=B:TERM@120 sends before the time limit: SIGTERM to the batch shell only.
    run_ok(
        cluster
            .client("scancel")
            .args(["--batch", "--signal=TERM", &interrupted]),
        "scancel --batch --signal=TERM",
        Duration::from_secs(30),
    );
    let state = cluster.wait_done(&interrupted, limit);
    let log = job_log(work.path(), &interrupted);
    assert_eq!(state, "COMPLETED", "job {interrupted}:\n{log}");
    assert!(
        log.contains("coordinator exited with status 75") && log.contains("requeueing job"),
        "the first run of job {interrupted} did not checkpoint and requeue:\n{log}"
    );
    assert_eq!(cluster.field(&interrupted, "Restarts"), "1", "{log}");
    let results = check_results(&run.join("results.json"));
    // The requeued run took its workers back after step 0: the events of both segments.
    let rejoined = results["membership"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["event"] == "joined" && e["step"].as_u64() > Some(0))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(rejoined, 3, "membership: {}", results["membership"]);
    assert!(
        model_tensors(&checkpoint) == reference,
        "the requeued job ended with other weights than the uninterrupted one"
    );
}

/// Slurm signals every process of a job it kills and the batch script forwards the SIGTERM it
/// gets, so the coordinator may get two at once: it must still checkpoint and exit 75.
#[test]
fn a_second_sigterm_still_ends_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run.safetensors");
    let mut child = Command::new(bin("coordinator"))
        .args(["--workers", "0", "--threads", "1", "--dataset", "mnist"])
        .args(RUN_FLAGS)
        .arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(dir.path().join("run.json"))
        .arg("--checkpoint")
        .arg(&checkpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the coordinator");
    let at = poll("the first checkpoint", Duration::from_secs(120), || {
        checkpoint_steps(&checkpoint)
    });
    for _ in 0..2 {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {}", child.id());
    }
    let status = poll("the coordinator to exit", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(75), "{status}");
    let steps = checkpoint_steps(&checkpoint).unwrap_or(0);
    assert!(
        at <= steps && steps < RUN_STEPS,
        "checkpoint at step {steps}"
    );
}
