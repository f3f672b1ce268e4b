//! Lints of the deployment files: shellcheck on every shell script, yamllint on every YAML
//! file, and the GPU batch script kept the CPU one with a GPU per task.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::deploy::{repo_files, repo_root, require, run_ok};

#[test]
fn shellcheck_passes_on_every_script() {
    require("shellcheck");
    let mut scripts = repo_files(&[".sh", ".sbatch"]);
    scripts.push(repo_root().join(".ci/run"));
    assert!(scripts.len() >= 6, "scripts found: {scripts:?}");
    run_ok(
        Command::new("shellcheck").args(&scripts),
        "shellcheck",
        Duration::from_secs(120),
    );
}

#[test]
fn yamllint_passes_on_every_yaml_file() {
    require("yamllint");
    let files = repo_files(&[".yaml", ".yml"]);
    assert!(files.len() >= 10, "YAML files found: {files:?}");
    // The repository's .yamllint.yaml is read from the working folder; --strict fails on
    // warnings too.
    run_ok(
        Command::new("yamllint")
            .arg("--strict")
            .args(&files)
            .current_dir(repo_root()),
        "yamllint",
        Duration::from_secs(120),
    );
}

/// The lines after the last `#SBATCH` line.
fn body(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("#SBATCH"))
        .unwrap_or_else(|| panic!("{} has no #SBATCH line", path.display()));
    lines[last + 1..].join("\n")
}

#[test]
fn the_gpu_batch_script_is_the_cpu_one_with_a_gpu_per_task() {
    let slurm = repo_root().join("deploy/slurm");
    assert_eq!(
        body(&slurm.join("train.sbatch")),
        body(&slurm.join("train-gpu.sbatch")),
        "below their #SBATCH lines, train.sbatch and train-gpu.sbatch must be the same"
    );
    let gpu = std::fs::read_to_string(slurm.join("train-gpu.sbatch")).unwrap();
    assert!(gpu.contains("\n#SBATCH --gpus-per-task=1\n"));
}
