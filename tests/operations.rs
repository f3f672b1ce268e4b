//! Operating a run: a real Prometheus scrapes a running cluster (coordinator and workers), a
//! terminal shows progress bars while a pipe gets plain lines, JSON logs parse line by line,
//! and every run leaves its curves and, when asked, its test scores beside the results.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::ops_util::{free_port, http_get, kill, require_tool, wait_for_text};
use integration_tests::{bin, read_results, run_with_limit, shared_dataset};

/// One number from Prometheus's query API (the last value within ten minutes, so a series
/// whose target finished still answers), or `None` while it has none.
fn query(prometheus: &str, expr: &str) -> Option<f64> {
    // Percent-encoding of everything but unreserved characters.
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let url = format!("http://{prometheus}/api/v1/query?query={encoded}");
    let body = http_get(&url).ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_a_running_cluster_and_its_api_returns_the_training_metrics() {
    let prometheus_bin = require_tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let worker_ports = [free_port(), free_port()];

    // Prometheus first, so that it scrapes the whole run: the coordinator and both workers,
    // every second.
    let prometheus_port = free_port();
    let targets = std::iter::once(metrics_port)
        .chain(worker_ports)
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: siamese\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new(prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("127.0.0.1:{prometheus_port}");
    let start = Instant::now();
    while http_get(&format!("http://{api}/-/ready")).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never became ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let addr_file = dir.path().join("addr");
    let mut coordinator = Command::new(bin("coordinator"))
        .args([
            "--dataset",
            "mnist",
            "--workers",
            "2",
            "--no-spawn",
            "--token",
            "tok",
        ])
        .args(["--epochs", "3", "--train-subset", "12000"])
        .args([
            "--val-pairs",
            "1000",
            "--test-pairs",
            "1000",
            "--checkpoint-every",
            "40",
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(dir.path().join("run.json"))
        .arg("--address-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = wait_for_text(&addr_file, &mut coordinator, Duration::from_secs(60));
    // The coordinator's endpoint answers in the exposition format Prometheus reads.
    let text = http_get(&format!("http://127.0.0.1:{metrics_port}/metrics")).unwrap();
    assert!(
        text.contains("# TYPE siamese_training_steps counter"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut workers: Vec<_> = worker_ports
        .iter()
        .map(|port| {
            Command::new(bin("worker"))
                .args(["--coordinator", &format!("http://{addr}"), "--token", "tok"])
                .args(["--threads", "1"])
                .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(shared_dataset("mnist"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let status = coordinator.wait().unwrap();
    for w in &mut workers {
        let _ = w.wait();
    }
    assert!(status.success(), "the coordinator failed");

    // What Prometheus stored during the run (the last value of each series within ten minutes).
    let last = |name: &str| query(&api, &format!("last_over_time({name}[10m])"));
    let sum_last = |name: &str| query(&api, &format!("sum(last_over_time({name}[10m]))"));
    let up = query(&api, "count(max_over_time(up[10m]) == 1)");
    let steps = last("siamese_training_steps_total");
    let alive = last("siamese_workers_alive");
    let joined = last("siamese_membership_events_total{event=\"joined\"}");
    let loss = last("siamese_training_loss");
    let val = last("siamese_validation_accuracy_ratio");
    let rate = last("siamese_training_pairs_per_second");
    let epoch = last("siamese_training_epoch");
    let compute = sum_last("siamese_cluster_worker_compute_seconds_total");
    let age = last("siamese_checkpoint_age_seconds");
    let worker_tasks = sum_last("siamese_worker_tasks_total{kind=\"gradient\"}");
    kill(&mut prometheus);
    eprintln!(
        "prometheus: targets up {up:?}, steps {steps:?}, alive {alive:?}, joined {joined:?}, loss {loss:?}, validation accuracy {val:?}, pairs/s {rate:?}, epoch {epoch:?}, compute {compute:?} s, checkpoint age {age:?} s, worker gradient tasks {worker_tasks:?}"
    );
    let within = |v: Option<f64>, lo: f64, hi: f64| v.is_some_and(|v| (lo..=hi).contains(&v));
    assert_eq!(up, Some(3.0), "the coordinator and both workers scraped");
    // 12,000 pairs per epoch in batches of 64: 188 steps an epoch, 564 in all.
    assert!(within(steps, 188.0, 564.0), "steps {steps:?}");
    assert_eq!(alive, Some(2.0));
    assert!(within(joined, 2.0, 4.0), "joined events {joined:?}");
    assert!(within(loss, 1e-3, 0.25), "training loss {loss:?}");
    assert!(within(val, 0.8, 1.0), "validation accuracy {val:?}");
    assert!(within(rate, 100.0, 1e6), "pairs/s {rate:?}");
    assert!(within(epoch, 1.0, 3.0), "epoch {epoch:?}");
    assert!(
        within(compute, 0.1, 1e4),
        "worker compute seconds {compute:?}"
    );
    assert!(within(age, 0.0, 60.0), "checkpoint age {age:?}");
    // Both workers' own endpoints: their gradient tasks add up to at least the steps seen.
    assert!(
        within(worker_tasks, 188.0, 1e6),
        "worker gradient tasks {worker_tasks:?}"
    );
}

/// A short run on real MNIST (`workers` 0: in this process).
fn short_run(cmd: &mut Command, dir: &Path, epochs: &str, workers: &str) {
    cmd.args(["--dataset", "mnist", "--workers", workers, "--threads", "1"])
        .args(["--epochs", epochs, "--train-subset", "3000"])
        .args(["--val-pairs", "500", "--test-pairs", "500"])
        .arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(dir.join("run.json"));
}

#[test]
fn a_piped_run_prints_plain_lines_and_leaves_curves_and_scores_beside_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("scores.csv");
    let mut cmd = Command::new(bin("coordinator"));
    short_run(&mut cmd, dir.path(), "2", "0");
    let out = run_with_limit(cmd.arg("--scores").arg(&scores), Duration::from_secs(180));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("epoch    1  train loss"), "{stdout}");
    assert!(stdout.contains("epoch    2  train loss"), "{stdout}");
    assert!(
        !stdout.contains("ETA") && !stderr.contains("ETA"),
        "a bar on a pipe"
    );
    let curves = dir.path().join("run-curves.png");
    assert!(
        stdout.contains(&format!("curves written to {}", curves.display())),
        "{stdout}"
    );
    let png = std::fs::read(&curves).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The scores file reproduces the run's test accuracy.
    let text = std::fs::read_to_string(&scores).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("pair,a,b,same,similarity,class_a,class_b")
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 500);
    let correct = rows
        .iter()
        .filter(|r| (r[4].parse::<f32>().unwrap() > 0.5) == (r[3] == "1"))
        .count();
    assert!(
        rows.iter().all(|r| (r[5] == r[6]) == (r[3] == "1")),
        "labels and classes agree"
    );
    let results = read_results(&dir.path().join("run.json"));
    let accuracy = results["test"]["pair_accuracy"].as_f64().unwrap();
    assert!(
        (correct as f64 / 500.0 - accuracy).abs() < 1e-9,
        "{correct} vs {accuracy}"
    );

    // --quiet: nothing on stdout, no info lines on stderr, a local worker's included.
    let quiet_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    short_run(&mut cmd, quiet_dir.path(), "1", "1");
    let out = run_with_limit(
        cmd.arg("--quiet").env_remove("RUST_LOG"),
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("INFO"));
}

#[test]
fn a_terminal_run_under_tmux_shows_the_progress_bar() {
    let tmux = require_tool("tmux");
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("siamese-ops-{}", std::process::id());
    let mut cmd = Command::new(bin("coordinator"));
    short_run(&mut cmd, dir.path(), "3", "0");
    // The whole command line for the shell tmux starts; arguments hold no quotes or spaces.
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let done = dir.path().join("done");
    let script = format!("{line}; echo $? > {}; sleep 60", done.display());
    let status = Command::new(&tmux)
        .args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            &script,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "tmux did not start");
    let capture = || {
        let out = Command::new(&tmux)
            .args(["-L", &socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let start = Instant::now();
    let mut bar = None;
    while !done.exists() && start.elapsed() < Duration::from_secs(180) {
        let screen = capture();
        if let Some(l) = screen
            .lines()
            .find(|l| l.contains("epoch 2/3 [") && l.contains("run ETA"))
        {
            bar = Some(l.to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let finished = capture();
    let _ = Command::new(&tmux)
        .args(["-L", &socket, "kill-server"])
        .status();
    let exit = std::fs::read_to_string(&done).unwrap_or_default();
    assert_eq!(exit.trim(), "0", "the run failed:\n{finished}");
    let bar = bar.unwrap_or_else(|| panic!("no progress bar seen; last screen:\n{finished}"));
    eprintln!("tmux: the bar read {bar:?}; the finished screen:\n{finished}");
    for part in ["steps", "pairs/s", "loss", "epoch ETA"] {
        assert!(bar.contains(part), "{part:?} missing from the bar {bar:?}");
    }
    // Each finished epoch leaves its plain line where its bar was.
    assert!(finished.contains("epoch    3  train loss"), "{finished}");
}

#[test]
fn json_logs_parse_line_by_line_worker_lines_included() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("coordinator"));
    // One local worker: its lines pass through the coordinator's stderr. The metrics address
    // in the environment is the coordinator's alone (a worker that took it too would fail).
    short_run(&mut cmd, dir.path(), "1", "1");
    let metrics = format!("127.0.0.1:{}", free_port());
    cmd.args(["--log-format", "json"])
        .env("SIAMESE_METRICS_LISTEN", &metrics);
    let out = run_with_limit(&mut cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let epoch = lines
        .iter()
        .find(|l| l["message"] == "epoch")
        .expect("an epoch event");
    assert_eq!(epoch["epoch"], 1);
    assert!(epoch["val_accuracy"].as_f64().unwrap() > 0.5);
    assert!(lines.iter().all(|l| l["level"].is_string()));
    assert!(
        lines.iter().any(|l| l["source"] == "[rank 0]"),
        "no worker line among {} lines",
        lines.len()
    );
    assert!(lines.iter().any(|l| l["message"] == "test"));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "serving metrics" && l["addr"] == metrics.as_str()),
        "the coordinator serves its metrics"
    );
}
