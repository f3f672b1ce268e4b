//! Helpers for the deployment tests (`deploy_*.rs`): the repository's files, the tools they need
//! (installed by `scripts/deploy-test-setup.sh`), commands that must succeed, checkpoints read
//! back, polling with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{run_with_limit, shared_dataset};

pub use crate::model_tensors;
pub use crate::ops_util::repo_root;

/// The datasets root (`../shared/datasets`), holding `mnist/`.
pub fn datasets_root() -> PathBuf {
    shared_dataset("mnist")
        .parent()
        .expect("mnist lies in the datasets root")
        .to_path_buf()
}

/// Fails the test, naming the tool and how to install it, unless `tool` is on PATH.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run `bash scripts/deploy-test-setup.sh` (as root, Debian 12), \
         which installs podman, Slurm, munge, shellcheck, yamllint and the Python venv these tests use"
    );
}

/// The Python of the venv `scripts/deploy-test-setup.sh` makes (kubernetes-validate, grpcio).
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".deploy-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/deploy-test-setup.sh`",
        python.display()
    );
    python
}

/// The repository's files (tracked, and new ones git does not ignore) whose name ends in one
/// of `suffixes`.
pub fn repo_files(suffixes: &[&str]) -> Vec<PathBuf> {
    let out = run_ok(
        Command::new("git")
            .args(["ls-files", "--cached", "--others", "--exclude-standard"])
            .current_dir(repo_root()),
        "git ls-files",
        Duration::from_secs(30),
    );
    out.lines()
        .filter(|f| suffixes.iter().any(|s| f.ends_with(s)))
        .map(|f| repo_root().join(f))
        .filter(|f| f.exists())
        .collect()
}

/// Runs `cmd` to completion within `limit`, fails the test with its output unless it succeeds,
/// and returns its stdout.
pub fn run_ok(cmd: &mut Command, what: &str, limit: Duration) -> String {
    let out = run_with_limit(cmd, limit);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 200 ms until it gives a value; fails the test naming `what` past `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {what} in vain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The run's record in a checkpoint's header (position, membership, ...); `None` while the
/// file does not exist or cannot be read.
pub fn checkpoint_record(path: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let run = header.metadata().as_ref()?.get("siamese-cluster")?;
    serde_json::from_str(run).ok()
}

/// The optimizer steps a checkpoint holds; `None` while it does not exist or cannot be read.
pub fn checkpoint_steps(path: &Path) -> Option<u64> {
    checkpoint_record(path)?["position"]["steps"].as_u64()
}

/// The flags of the run both deployment tests train: 10 epochs of 313 steps on 20,000 MNIST
/// images (about 15 s on 3 workers on the 2-core CI machine: long enough to lose a worker, let
/// its replacement join and stop the coordinator, all mid-run; 3 epochs were, until the faster
/// kernels of issue 13 ended the run in under 5 s, before a replacement pod could join), a
/// checkpoint every 20 steps, the first 400 test pairs.
pub const RUN_FLAGS: [&str; 12] = [
    "--train-subset",
    "20000",
    "--epochs",
    "10",
    "--val-pairs",
    "200",
    "--test-pairs",
    "400",
    "--seed",
    "7",
    "--checkpoint-every",
    "20",
];

/// The steps of the run [`RUN_FLAGS`] describe.
pub const RUN_STEPS: u64 = 3130;

/// Lowest test pair accuracy accepted for that run (it reaches about 0.96).
pub const ACCURACY_FLOOR: f64 = 0.85;

/// Checks a results file of that run: every step done, the stated test pairs scored, accuracy
/// above the floor. Returns the file's JSON.
pub fn check_results(path: &Path) -> serde_json::Value {
    let results = crate::read_results(path);
    let test = &results["test"];
    assert_eq!(test["pairs"].as_u64(), Some(400), "{test}");
    let accuracy = test["pair_accuracy"].as_f64().unwrap_or(0.0);
    assert!(
        accuracy > ACCURACY_FLOOR,
        "test pair accuracy {accuracy} is not above {ACCURACY_FLOOR}: {test}"
    );
    let i = RUN_FLAGS
        .iter()
        .position(|f| *f == "--epochs")
        .expect("--epochs");
    let epochs: usize = RUN_FLAGS[i + 1].parse().expect("a number of epochs");
    assert_eq!(results["epochs"].as_array().map(Vec::len), Some(epochs));
    results
}
