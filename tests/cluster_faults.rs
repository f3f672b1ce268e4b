//! What the coordinator refuses from a misbehaving worker, and what stock gRPC clients see.

use integration_tests::fake_worker::{self, Fault};
use integration_tests::{shared_dataset, waiting_coordinator, waiting_coordinator_with};

fn coordinator_against_fake(fault: Fault) -> String {
    let dir = tempfile::tempdir().unwrap();
    // A lost worker is waited for (to be replaced) up to the join timeout: keep it short; and
    // a worker that answers nothing is lost after the step timeout.
    let (coordinator, addr) = waiting_coordinator_with(
        dir.path(),
        1,
        "test-token-0123456789",
        &["--join-timeout", "5", "--step-timeout", "3"],
    );
    let start = std::time::Instant::now();
    // The fake runs beside the coordinator: some faults (a worker that reads nothing) never
    // end by themselves, and the coordinator's own deadlines are what is tested.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(fake_worker::run(
            &addr,
            "test-token-0123456789",
            &shared_dataset("mnist"),
            fault,
        ));
    });
    let out = coordinator.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "the coordinator accepted a faulty worker:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // No epoch finished, so no checkpoint was written from a bad step, nor any results.
    assert!(!dir.path().join("remote.safetensors").exists());
    assert!(!dir.path().join("remote.json").exists());
    // Every fault ends within its deadlines (join 5 s, step 3 s), not at some default.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(40),
        "{err}"
    );
    err
}

#[test]
fn nan_gradient_is_refused_naming_the_worker() {
    let err = coordinator_against_fake(Fault::NanGradient);
    assert!(
        err.contains("worker 0") && err.contains("NaN") && err.contains("not applied"),
        "{err}"
    );
}

#[test]
fn gradient_of_the_wrong_length_is_refused() {
    let err = coordinator_against_fake(Fault::ShortGradient);
    assert!(
        err.contains("worker 0") && err.contains("values, the model has"),
        "{err}"
    );
}

#[test]
fn a_gradient_claimed_in_unmapped_shared_memory_is_refused() {
    let err = coordinator_against_fake(Fault::ClaimsSharedMemory);
    assert!(
        err.contains("worker 0") && err.contains("shared memory") && err.contains("not applied"),
        "{err}"
    );
}

#[test]
fn a_nan_loss_is_refused_naming_the_worker() {
    let err = coordinator_against_fake(Fault::NanLoss);
    assert!(
        err.contains("worker 0") && err.contains("loss sum is NaN"),
        "{err}"
    );
}

#[test]
fn more_correct_pairs_than_pairs_is_refused() {
    let err = coordinator_against_fake(Fault::MoreCorrectThanPairs);
    assert!(
        err.contains("worker 0") && err.contains("pairs are correct"),
        "{err}"
    );
}

#[test]
fn an_oversized_message_ends_the_workers_session() {
    let err = coordinator_against_fake(Fault::Oversized);
    assert!(
        err.contains("worker 0 (fake:") && err.contains("too large"),
        "{err}"
    );
}

#[test]
fn an_answer_to_a_task_never_sent_puts_the_worker_out() {
    let err = coordinator_against_fake(Fault::UnknownTask);
    assert!(err.contains("which was never sent"), "{err}");
}

#[test]
fn a_worker_that_reads_nothing_is_lost_after_the_step_timeout() {
    let err = coordinator_against_fake(Fault::NeverReads);
    assert!(
        err.contains("worker 0 (fake:") && err.contains("within 3 s"),
        "{err}"
    );
}

#[test]
fn a_vanished_worker_not_replaced_in_time_stops_the_run_naming_it() {
    let err = coordinator_against_fake(Fault::VanishAfter(3));
    assert!(
        err.contains("only 0 worker(s) left")
            && err.contains("none joined within 5 s")
            && err.contains("worker 0 (fake:"),
        "{err}"
    );
}

/// After the first step (whose tasks have nothing to ride with), a step's gradient tasks reach
/// the worker inside the message that brings the weights they are computed at: the mean for
/// allreduce, the weights for `coordinator`. One message a step, not two.
#[test]
fn a_steps_tasks_ride_in_the_message_with_its_weights() {
    for (aggregation, payload) in [("allreduce", "reduced"), ("coordinator", "weights")] {
        let dir = tempfile::tempdir().unwrap();
        let (mut coordinator, addr) = waiting_coordinator_with(
            dir.path(),
            1,
            "test-token-0123456789",
            &["--join-timeout", "5", "--aggregation", aggregation],
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let received = runtime.block_on(fake_worker::run(
            &addr,
            "test-token-0123456789",
            &shared_dataset("mnist"),
            Fault::VanishAfter(6),
        ));
        let _ = coordinator.kill();
        let _ = coordinator.wait();
        let with_tasks: Vec<_> = received.iter().filter(|r| r.gradient_tasks > 0).collect();
        assert_eq!(with_tasks.len(), 7, "{aggregation}: {received:?}");
        assert_eq!(with_tasks[0].body, "task", "{aggregation}: {received:?}");
        for r in &with_tasks[1..] {
            assert_eq!(r.body, payload, "{aggregation}: {received:?}");
        }
        assert!(
            received.iter().all(|r| r.body != "none"),
            "{aggregation}: {received:?}"
        );
    }
}

#[test]
fn health_reflection_and_token_checks_answer_stock_grpc_clients() {
    use siamese_common::cluster::protocol::proto::RunRequest;
    use siamese_common::cluster::protocol::proto::cluster_client::ClusterClient;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let (mut coordinator, addr) = waiting_coordinator(dir.path(), 1, "test-token-0123456789");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Kubernetes' gRPC probe asks the standard health service, without any token.
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "siamese.cluster.v1.Cluster".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        // grpcurl-style reflection lists the cluster service.
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("reflection did not list services");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "siamese.cluster.v1.Cluster"),
            "{list:?}"
        );
        // The cluster service itself refuses a call without the token.
        let err = ClusterClient::new(channel)
            .run(RunRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    });
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

#[test]
fn a_local_worker_that_dies_at_start_fails_the_run_at_once() {
    use integration_tests::{bin, run_with_limit};
    use std::process::Command;
    use std::time::Duration;
    // A default build has no CUDA: the workers exit at start with a message saying so.
    let out = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["--workers", "2", "--device", "cuda:0", "--epochs", "1"])
            .args(["--join-timeout", "600"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist")),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("exited before all workers joined") && err.contains("needs CUDA"),
        "{err}"
    );
}

#[test]
fn garbage_instead_of_protobuf_is_refused_and_the_run_goes_on() {
    use integration_tests::raw_grpc::stream_call;
    let token = "test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) = waiting_coordinator(dir.path(), 1, token);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = "/siamese.cluster.v1.Cluster/Session";
    // Bytes that are no protobuf at all; then a Join field whose length runs past the message.
    for garbage in [
        vec![0xff; 64],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3],
    ] {
        let answer = runtime.block_on(stream_call(&addr, session, token, vec![garbage]));
        let status = answer.expect_err("the coordinator answered garbage");
        assert!(
            status.message().contains("decode"),
            "{:?} {}",
            status.code(),
            status.message()
        );
    }
    // Without the token, garbage never reaches the decoder.
    let status = runtime
        .block_on(stream_call(
            &addr,
            session,
            "wrong-token-0123456789",
            vec![vec![0xff; 8]],
        ))
        .expect_err("the coordinator answered without the token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // The coordinator still waits for, and trains with, an honest worker.
    let worker = std::process::Command::new(integration_tests::bin("worker"))
        .args(["--coordinator", &format!("http://{addr}"), "--token", token])
        .args(["--threads", "1", "--data-dir"])
        .arg(shared_dataset("mnist"))
        .output()
        .unwrap();
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    let out = coordinator.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("remote.json").exists());
}
