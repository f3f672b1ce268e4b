//! The coordinator's side of NCCL runs over real gRPC on 127.0.0.1, without a GPU: the id
//! relay, rank assignment, the replica-digest check, and ranks that never join or never form
//! their communicator (the run stops with a clear error instead of hanging), and `--ema`, which
//! NCCL runs cannot keep, refused before any rank is awaited.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use integration_tests::fake_nccl::{self, Behaviour, Seen};
use integration_tests::{bin, read_results, shared_dataset, waiting_coordinator_with};

/// Runs fake NCCL workers against `addr` concurrently; returns what each saw.
fn fakes(addr: &str, behaviours: &[Behaviour]) -> Vec<Seen> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data = shared_dataset("mnist");
    runtime.block_on(async {
        let handles: Vec<_> = behaviours
            .iter()
            .map(|&b| {
                let (addr, data) = (addr.to_string(), data.clone());
                tokio::spawn(async move {
                    fake_nccl::run(&addr, "test-token-0123456789", &data, b).await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for h in handles {
            seen.push(h.await.unwrap());
        }
        seen
    })
}

/// Waits for the coordinator, failing (not hanging) past `limit`; returns (success, stderr).
fn finish(mut coordinator: Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    while coordinator.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = coordinator.kill();
            panic!("the coordinator hung past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = coordinator.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const NCCL: [&str; 2] = ["--aggregation", "nccl"];

#[test]
fn rank_0s_id_reaches_every_rank_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[&NCCL[..], &["--max-steps", "12", "--digest-every", "5"]].concat(),
    );
    let seen = fakes(&addr, &[Behaviour::Healthy, Behaviour::Healthy]);
    let (ok, err) = finish(coordinator, Duration::from_secs(120));
    assert!(ok, "{err}");
    let mut ranks: Vec<u32> = seen.iter().map(|s| s.rank).collect();
    ranks.sort_unstable();
    assert_eq!(ranks, [0, 1]);
    let sent = &seen.iter().find(|s| s.rank == 0).unwrap().sent_id;
    assert!(!sent.is_empty());
    for s in &seen {
        assert_eq!(&s.relayed_id, sent, "rank {} got another id", s.rank);
        assert_eq!(s.steps, 12);
        assert!(s.stopped);
    }
    let r = read_results(&dir.path().join("remote.json"));
    assert_eq!(r["aggregation"], "nccl");
    assert_eq!(r["workers"], 2);
}

#[test]
fn diverged_replicas_stop_the_run_naming_the_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[&NCCL[..], &["--max-steps", "30", "--digest-every", "5"]].concat(),
    );
    fakes(&addr, &[Behaviour::Healthy, Behaviour::DivergeAt(4)]);
    let (ok, err) = finish(coordinator, Duration::from_secs(120));
    assert!(!ok, "diverged replicas were accepted");
    assert!(
        err.contains("replicas diverged after 5 steps") && err.contains("md5"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // No epoch ended, so no checkpoint holds the diverged state.
    assert!(!dir.path().join("remote.safetensors").exists());
}

#[test]
fn a_rank_that_never_forms_its_communicator_times_out_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[&NCCL[..], &["--nccl-timeout", "3"]].concat(),
    );
    let seen = fakes(&addr, &[Behaviour::Healthy, Behaviour::NeverReady]);
    let (ok, err) = finish(coordinator, Duration::from_secs(60));
    assert!(!ok);
    assert!(
        err.contains("timed out after 3 s") && err.contains("to form its NCCL communicator"),
        "{err}"
    );
    // Both fakes got out of their sessions instead of waiting forever.
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_rank_that_never_joins_stops_the_others_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[&NCCL[..], &["--join-timeout", "3"]].concat(),
    );
    let seen = fakes(&addr, &[Behaviour::Healthy]);
    let (ok, err) = finish(coordinator, Duration::from_secs(60));
    assert!(!ok);
    assert!(err.contains("2 workers to join (1 joined)"), "{err}");
    assert!(
        seen[0].stopped,
        "the joined rank was not told the run failed"
    );
}

#[test]
fn a_worker_built_without_nccl_says_how_to_build_one() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        1,
        "test-token-0123456789",
        &[&NCCL[..], &["--nccl-timeout", "20"]].concat(),
    );
    let out = Command::new(bin("worker"))
        .args([
            "--coordinator",
            &format!("http://{addr}"),
            "--token",
            "test-token-0123456789",
        ])
        .arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .output()
        .unwrap();
    let (ok, err) = finish(coordinator, Duration::from_secs(60));
    let worker_err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(worker_err.contains("--features nccl"), "{worker_err}");
    assert!(!ok);
    assert!(err.contains("--features nccl"), "{err}");
}

/// Plays `behaviour`, joining again each time its session ends without Stop (as a real worker
/// reconnects, or an orchestrator restarts a dead one), for up to a minute; every session's view.
async fn rejoining(addr: String, behaviour: Behaviour) -> Vec<Seen> {
    let data = shared_dataset("mnist");
    let start = Instant::now();
    let mut sessions = Vec::new();
    loop {
        let seen = fake_nccl::run(&addr, "test-token-0123456789", &data, behaviour).await;
        let stopped = seen.stopped;
        sessions.push(seen);
        if stopped || start.elapsed() > Duration::from_secs(60) {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_lost_rank_makes_the_group_form_again_from_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[
            &NCCL[..],
            &["--max-steps", "30", "--checkpoint-every", "10"],
            &["--digest-every", "5", "--join-timeout", "60"],
        ]
        .concat(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (survivor, replaced) = runtime.block_on(async {
        let survivor = tokio::spawn(rejoining(addr.clone(), Behaviour::Healthy));
        // The second rank dies before step 16; a replacement takes its place.
        let data = shared_dataset("mnist");
        let lost = fake_nccl::run(
            &addr,
            "test-token-0123456789",
            &data,
            Behaviour::VanishAfter(15),
        )
        .await;
        assert!(!lost.stopped && lost.steps == 15, "{lost:?}");
        let replacement = rejoining(addr.clone(), Behaviour::Healthy).await;
        (survivor.await.unwrap(), replacement)
    });
    let (ok, err) = finish(coordinator, Duration::from_secs(120));
    assert!(ok, "{err}");
    // The survivor's first group was closed; it joined the new one, which formed on a new id
    // and started from the checkpoint written at step 10.
    assert!(survivor.len() >= 2, "{survivor:?}");
    let last = survivor.last().unwrap();
    assert!(last.stopped);
    assert_ne!(survivor[0].relayed_id, last.relayed_id);
    assert_eq!(last.state_version, Some(10));
    assert_eq!(last.steps, 30);
    let joined = replaced.last().unwrap();
    assert_eq!(joined.relayed_id, last.relayed_id);
    assert!(joined.stopped);
    let r = read_results(&dir.path().join("remote.json"));
    let events = r["membership"].as_array().unwrap();
    let lost = events.iter().filter(|e| e["event"] == "lost").count();
    let joined = events.iter().filter(|e| e["event"] == "joined").count();
    assert!(lost >= 2 && joined >= 4, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "lost" && e["step"] == 15),
        "{events:?}"
    );
}

#[test]
fn a_moving_average_is_refused_before_any_rank_is_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, _addr) = waiting_coordinator_with(
        dir.path(),
        2,
        "test-token-0123456789",
        &[&NCCL[..], &["--max-steps", "12", "--ema", "0.99"]].concat(),
    );
    // No worker joins: the refusal must not wait for one.
    let (ok, err) = finish(coordinator, Duration::from_secs(60));
    assert!(!ok, "--ema was accepted with nccl");
    assert!(
        err.contains("--ema needs every step's weights on the coordinator")
            && err.contains("--aggregation nccl"),
        "{err}"
    );
    assert!(!dir.path().join("remote.safetensors").exists());
}
