//! Every bench command at a tiny size: what it writes has the right shape and sane values.
//! Speed is the benchmarks' business, never asserted here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::{bin, read_results, run_with_limit, shared_dataset};

#[test]
fn bench_scaling_writes_json_csv_and_png_with_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scaling.json");
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["bench", "scaling", "--dataset", "mnist", "--workers", "2"])
            .args(["--mode", "both", "--steps", "4", "--warmup", "1"])
            .args(["--repeats", "1", "--threads", "1"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(&out),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| mode | workers |"), "{stdout}");
    let r = read_results(&out);
    let runs = r["runs"].as_array().unwrap();
    // Strong and weak, each at 1 and 2 workers.
    assert_eq!(runs.len(), 4, "{r}");
    for run in runs {
        let mode = run["mode"].as_str().unwrap();
        assert!(mode == "strong" || mode == "weak", "{run}");
        let workers = run["workers"].as_u64().unwrap();
        let batch = run["global_batch"].as_u64().unwrap();
        let want = if mode == "weak" { 64 * workers } else { 64 };
        assert_eq!(batch, want, "{run}");
        assert!(run["pairs_per_s"].as_f64().unwrap() > 0.0, "{run}");
        let eff = run["efficiency"].as_f64().unwrap();
        assert!(eff > 0.0 && eff <= 1.2, "{run}");
        let share = run["comm_share"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&share), "{run}");
        assert!(run["compute_ms"].as_f64().unwrap() > 0.0, "{run}");
        if workers == 1 {
            assert_eq!(run["speedup"].as_f64().unwrap(), 1.0);
        }
    }
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let png = std::fs::read(out.with_extension("png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn bench_scaling_refuses_a_batch_smaller_than_the_workers() {
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["bench", "scaling", "--workers", "4", "--mode", "strong"])
            .args(["--batch-size", "2", "--steps", "1"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist")),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot be split across 4 workers") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// Counts out of range are refused by the flag's name and value before anything runs (a
/// worker count of 0 used to run as if it were 1).
#[test]
fn bench_counts_out_of_range_are_refused_naming_the_flag() {
    for (args, want) in [
        (
            &["scaling", "--workers", "2,0"][..],
            "'0' for '--workers <WORKERS>'",
        ),
        (
            &["scaling", "--steps", "0"][..],
            "'0' for '--steps <STEPS>'",
        ),
        (
            &["scaling", "--repeats", "0"][..],
            "'0' for '--repeats <REPEATS>'",
        ),
        (
            &["test-time", "--threads", "0"][..],
            "'0' for '--threads <THREADS>'",
        ),
        (
            &["test-time", "--epochs", "0"][..],
            "'0' for '--epochs <EPOCHS>'",
        ),
        (
            &["paper", "--epochs", "0"][..],
            "'0' for '--epochs <EPOCHS>'",
        ),
        (
            &["paper", "--train-subset", "1"][..],
            "'1' for '--train-subset <TRAIN_SUBSET>'",
        ),
    ] {
        let output = run_with_limit(
            Command::new(bin("coordinator")).arg("bench").args(args),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_reports_that_cannot_be_written_are_refused_before_the_data_load() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-data");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"a file").unwrap();
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    for (args, want) in [
        (
            vec![
                "scaling".into(),
                "--out".into(),
                path(dir.path().join("s.png")),
            ],
            "--out and the plot (beside --out) are the same file".to_owned(),
        ),
        (
            vec!["scaling".into(), "--out".into(), path(plain.join("s.json"))],
            format!("{} is a file, not a folder", plain.display()),
        ),
        (
            vec!["paper".into(), "--out".into(), path(plain.join("report"))],
            format!(
                "--out (the report folder) {}/report/paper.json: {} is a file, not a folder",
                plain.display(),
                plain.display()
            ),
        ),
        (
            vec![
                "test-time".into(),
                "--out".into(),
                path(dir.path().join("t.json")),
                "--scores".into(),
                path(dir.path().join("t.json")),
            ],
            "--out and --scores are the same file".to_owned(),
        ),
    ] {
        // `bench paper` reads a folder of dataset folders.
        let data_flag = match args[0].as_str() {
            "paper" => "--data-dir-root",
            _ => "--data-dir",
        };
        let output = run_with_limit(
            Command::new(bin("coordinator"))
                .arg("bench")
                .args(&args)
                .args(["--dataset", "mnist", data_flag])
                .arg(&absent),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        assert!(!absent.exists(), "{args:?} looked for the data: {stderr}");
    }
}

#[test]
fn bench_test_time_writes_both_models_rows_with_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("test-time.json");
    let scores = dir.path().join("scores.csv");
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["bench", "test-time", "--dataset", "mnist", "--epochs", "1"])
            .args(["--train-subset", "2000", "--repeats", "1", "--threads", "1"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(&out)
            .arg("--scores")
            .arg(&scores),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| model | task | items |"), "{stdout}");
    let r = read_results(&out);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    let models: Vec<&str> = rows.iter().map(|x| x["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["SN-LeNet-5", "LeNet-5"]);
    for row in rows {
        assert_eq!(row["items"].as_u64(), Some(10_000), "{row}");
        assert_eq!(row["images"].as_u64(), Some(10_000), "{row}");
        let t = row["time_s"].as_f64().unwrap();
        let spread = &row["time_spread"];
        assert!(t > 0.0 && spread["min"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["items_per_s"].as_f64().unwrap() > 0.0, "{row}");
        let acc = row["test_accuracy"].as_f64().unwrap();
        assert!(acc > 0.0 && acc <= 1.0, "{row}");
    }
    // The paper's MNIST figures ride along: 4.04 s and 99.11 for SN, 9.37 s and 99.05 for LeNet-5.
    assert_eq!(rows[0]["paper"]["time_s"].as_f64(), Some(4.04));
    assert_eq!(rows[1]["paper"]["accuracy"].as_f64(), Some(0.9905));
    assert_eq!(r["sn_epochs"].as_array().unwrap().len(), 1, "{r}");
    let class_epochs = r["classifier_epochs"].as_array().unwrap();
    assert_eq!(class_epochs.len(), 1, "{r}");
    let val = class_epochs[0]["val_accuracy"].as_f64().unwrap();
    assert!(val > 0.0 && val <= 1.0, "{r}");
    let ncm = r["sn_test"]["ncm_accuracy"].as_f64().unwrap();
    assert!(ncm > 0.0 && ncm <= 1.0, "{r}");
    // --scores: a header and one row per test pair.
    let text = std::fs::read_to_string(&scores).unwrap();
    assert!(text.starts_with("pair,a,b,same,similarity,class_a,class_b\n"));
    assert_eq!(text.lines().count(), 10_001);
}

#[test]
fn bench_test_time_refuses_a_checkpoint_of_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["bench", "test-time", "--epochs", "1", "--repeats", "1"])
            .arg("--checkpoint")
            .arg(&bad)
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(dir.path().join("x.json")),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.safetensors") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn bench_paper_writes_every_table_and_figure_with_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paper");
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["bench", "paper", "--dataset", "mnist", "--epochs", "1"])
            .args(["--train-subset", "1000", "--quick", "--threads", "1"])
            .args(["--augment", "crop", "--select", "best-val", "--lr", "5e-4"])
            .arg("--mnist-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(&out),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for header in [
        "| dataset | epochs (paper) |",
        "| learning rate |",
        "| batch |",
    ] {
        assert!(stdout.contains(header), "{header} missing:\n{stdout}");
    }
    // The recipe, with the rate --lr set, is named above the tables and reaches every run.
    assert!(
        stdout.contains("Recipe: lr 5e-4, augment crop, select best-val"),
        "{stdout}"
    );
    assert!(
        stdout.contains("### Batch size (MNIST, learning rate 5e-4"),
        "{stdout}"
    );
    // The paper's figures ride beside ours: MNIST test 99.11, batch 32 at 34.76 s/epoch.
    assert!(
        stdout.contains("99.11") && stdout.contains("34.76"),
        "{stdout}"
    );
    let r = read_results(&out.join("paper.json"));
    let fraction = |v: &serde_json::Value| {
        let x = v.as_f64().unwrap();
        assert!(x > 0.0 && x <= 1.0, "{v} is not a fraction in (0, 1]");
    };
    let datasets = r["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 1, "{r}");
    let mnist = &datasets[0];
    assert_eq!(mnist["dataset"], "mnist");
    let run = &mnist["results"];
    assert_eq!(run["epochs"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(run["config"]["augment"], "crop", "{run}");
    assert_eq!(run["config"]["lr"].as_f64(), Some(5e-4), "{run}");
    assert_eq!(run["selection"]["rule"], "best-val", "{run}");
    let epoch = &run["epochs"][0];
    for key in ["train_accuracy", "val_accuracy"] {
        fraction(&epoch[key]);
    }
    for key in ["pair_accuracy", "roc_auc", "ncm_accuracy"] {
        fraction(&run["test"][key]);
    }
    assert!(run["test"]["time_s"].as_f64().unwrap() > 0.0, "{run}");
    assert!(
        mnist["seconds_per_epoch"].as_f64().unwrap() > 0.0,
        "{mnist}"
    );
    assert_eq!(mnist["paper"]["test_accuracy"].as_f64(), Some(0.9911));
    let grid = mnist["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 16, "{mnist}");
    for pair in grid {
        let s = pair["similarity"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "{pair}");
    }
    for (table, key, values) in [
        ("lr_table", "lr", [1e-4, 1e-3, 1e-2]),
        ("batch_table", "batch_size", [32.0, 64.0, 96.0]),
    ] {
        let rows = r[table].as_array().unwrap();
        let got: Vec<f64> = rows.iter().map(|x| x[key].as_f64().unwrap()).collect();
        assert_eq!(got, values, "{table}");
        for row in rows {
            for k in [
                "train_accuracy",
                "val_accuracy",
                "test_accuracy",
                "paper_train_accuracy",
            ] {
                fraction(&row[k]);
            }
            assert!(row["seconds_per_epoch"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
    assert_eq!(
        r["batch_table"][0]["paper_seconds_per_epoch"].as_f64(),
        Some(34.76)
    );
    // The batch table runs at --lr, and its batch-64 row is the dataset table's run; the
    // learning-rate table keeps the paper's three rates, so its 1e-3 row is a run of its own.
    let base = out.join("runs").join("mnist.json").display().to_string();
    let file = |table: &str, i: usize| r[table][i]["results_file"].as_str().unwrap().to_string();
    for row in r["batch_table"].as_array().unwrap() {
        assert_eq!(row["lr"].as_f64(), Some(5e-4), "{row}");
    }
    assert_eq!(file("batch_table", 1), base);
    assert_ne!(file("lr_table", 1), base);
    for key in ["curves_png", "pairs_png"] {
        let png = std::fs::read(mnist[key].as_str().unwrap()).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{key}");
    }
    assert!(out.join("paper.md").exists());
    // A bench paper run trains the bytes the plain coordinator trains with the same settings
    // (docs/benchmarks.md compares the two on CIFAR-10).
    let plain = dir.path().join("plain.json");
    let output = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["--workers", "0", "--threads", "1", "--dataset", "mnist"])
            .args(["--epochs", "1", "--train-subset", "1000"])
            .args(["--val-pairs", "1000", "--test-pairs", "1000"])
            .args(["--augment", "crop", "--select", "best-val", "--lr", "5e-4"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .arg("--out")
            .arg(&plain),
        Duration::from_secs(300),
    );
    assert!(
        output.status.success(),
        "coordinator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let best = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        best(&out.join("runs").join("mnist.best.safetensors"))
            == best(&dir.path().join("plain.best.safetensors")),
        "bench paper and the coordinator trained other bytes"
    );
}

#[test]
fn bench_paper_stops_on_sigterm_instead_of_finishing_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paper");
    // A budget of many minutes: only the signal can end it within the limit below.
    let mut child = Command::new(bin("coordinator"))
        .args(["bench", "paper", "--dataset", "mnist", "--epochs", "200"])
        .args(["--quick", "--threads", "1"])
        .arg("--mnist-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !out.join("runs").exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if stopped.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("bench paper was still running 60 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !out.join("paper.json").exists(),
        "a report of runs that did not finish"
    );
}
