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
