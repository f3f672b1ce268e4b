//! What a real worker refuses from a coordinator that lies: a bad `RunInfo`, a bad `Welcome`,
//! a forged shared-memory header, weights that are not numbers, Adam settings no run makes,
//! tasks naming what is not there.
//! Each ends in an error naming what was wrong, with no panic, within the worker's deadlines.

use std::path::Path;
use std::time::Duration;

use integration_tests::fake_coordinator::{FakeCoordinator, Script, message};
use integration_tests::{bin, run_with_limit, shared_dataset};
use siamese_common::cluster::protocol::proto::coordinator_message::Body;
use siamese_common::cluster::protocol::proto::{
    CoordinatorMessage, GradientTask, ReplicaState, Task, Weights, task, worker_message,
};
use siamese_common::cluster::protocol::wire::encode_f32;
use siamese_common::config::TrainConfig;
use siamese_common::data::{Augment, DatasetKind};
use siamese_common::model::ModelSpec;

fn spec() -> ModelSpec {
    ModelSpec::siamese(DatasetKind::Mnist, 10)
}

/// Runs a real worker against the fake until it exits; returns (succeeded, stderr).
fn worker_against(fake: &FakeCoordinator) -> (bool, String) {
    let out = run_with_limit(
        std::process::Command::new(bin("worker"))
            .args(["--coordinator", &format!("http://{}", fake.addr)])
            .args(["--token", "fake-token-0123456789", "--threads", "1"])
            .args(["--connect-timeout", "5", "--reconnect-timeout", "0"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist")),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.success(), err)
}

fn refused(script: Script) -> String {
    let fake = FakeCoordinator::start(script);
    let (ok, err) = worker_against(&fake);
    assert!(!ok, "the worker accepted a lying coordinator:\n{err}");
    err
}

fn weights(values: &[f32]) -> Weights {
    Weights {
        version: 0,
        values: encode_f32(values),
        in_shm: false,
    }
}

fn gradient_task(first: Vec<u32>, slot: Option<u32>) -> Task {
    let n = first.len();
    Task {
        id: 1,
        weights_version: 0,
        kind: Some(task::Kind::Gradient(GradientTask {
            second: (0..n as u32).collect(),
            same: vec![true; n],
            first,
            global_pairs: 0,
            micro_batch: 8,
            first_micro: 0,
            shm_slot: slot,
        })),
    }
}

/// An honest start, then these messages, waiting for one answer: returns the worker's error.
fn task_error(then: Vec<Body>, shm_path: Option<&Path>) -> String {
    let mut script = Script::honest(&spec());
    if let Some(path) = shm_path {
        script.info.shm_path = path.display().to_string();
        script.welcome.as_mut().unwrap().shm = true;
    }
    script.then = then.into_iter().map(message).collect();
    script.answers = 1;
    let fake = FakeCoordinator::start(script);
    let (_, err) = worker_against(&fake);
    let errors = fake.worker_errors();
    assert_eq!(errors.len(), 1, "{errors:?}\n{err}");
    errors[0].clone()
}

/// A shared-memory file with the real layout's header: magic, nonce, params, slots, version.
fn forged_region(dir: &Path, params: u64, slots: u64, len: usize) -> std::path::PathBuf {
    let mut bytes = vec![0u8; len];
    bytes[..8].copy_from_slice(b"SNSHM001");
    bytes[8..16].copy_from_slice(&42u64.to_le_bytes());
    bytes[16..24].copy_from_slice(&params.to_le_bytes());
    bytes[24..32].copy_from_slice(&slots.to_le_bytes());
    let path = dir.join("forged.shm");
    std::fs::write(&path, &bytes).unwrap();
    path
}

#[test]
fn another_protocol_version_is_refused_naming_both() {
    let mut script = Script::honest(&spec());
    script.info.protocol_version = 999;
    let err = refused(script);
    assert!(err.contains("protocol version 999"), "{err}");
}

#[test]
fn an_unknown_dataset_is_refused_naming_it() {
    let mut script = Script::honest(&spec());
    script.info.dataset = "imagenet-22k".into();
    let err = refused(script);
    assert!(err.contains("imagenet-22k"), "{err}");
}

#[test]
fn a_model_spec_that_is_not_json_is_refused() {
    let mut script = Script::honest(&spec());
    script.welcome.as_mut().unwrap().model_spec_json = "{\"channels\": 1, \"size\":".into();
    let err = refused(script);
    assert!(err.contains("bad model spec"), "{err}");
}

#[test]
fn a_model_too_small_for_lenet_is_refused_before_it_is_built() {
    let mut tiny = spec();
    tiny.size = 2;
    let mut script = Script::honest(&spec());
    script.welcome.as_mut().unwrap().model_spec_json = serde_json::to_string(&tiny).unwrap();
    let err = refused(script);
    assert!(
        err.contains("will not run") && err.contains("1x2x2"),
        "{err}"
    );
}

#[test]
fn a_crop_shift_out_of_range_is_refused_naming_it() {
    let mut cfg = TrainConfig::defaults(DatasetKind::Mnist).unwrap();
    cfg.recipe.augment = Augment::CropFlip;
    cfg.recipe.crop_pad = Some(1000);
    let mut script = Script::honest(&spec());
    script.welcome.as_mut().unwrap().config_json = serde_json::to_string(&cfg).unwrap();
    let err = refused(script);
    assert!(
        err.contains("will not run") && err.contains("--crop-pad 1000 is not in 1..=8"),
        "{err}"
    );
}

#[test]
fn an_unknown_aggregation_is_refused() {
    let mut script = Script::honest(&spec());
    script.welcome.as_mut().unwrap().aggregation = "gossip".into();
    let err = refused(script);
    assert!(err.contains("unknown aggregation \"gossip\""), "{err}");
}

#[test]
fn a_forged_shared_memory_header_is_not_mapped_and_its_offer_refused() {
    let dir = tempfile::tempdir().unwrap();
    // params * 4 * (1 + slots) wraps around in 64 bits to a small number: unchecked
    // arithmetic would accept this file and write far past its end.
    let params = 1u64 << 61;
    let path = forged_region(dir.path(), params, 1, 64 + 4096);
    let before = std::fs::read(&path).unwrap();
    let mut script = Script::honest(&spec());
    script.info.shm_path = path.display().to_string();
    script.welcome.as_mut().unwrap().shm = true;
    let err = refused(script);
    assert!(
        err.contains("offered shared memory this worker never mapped"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the worker wrote to it"
    );
}

#[test]
fn a_gradient_slot_past_the_shared_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let params = spec().num_params();
    // A well-formed file with no gradient slots at all.
    let path = forged_region(dir.path(), params as u64, 0, 64 + 4 * params);
    let before = std::fs::read(&path).unwrap();
    let err = task_error(
        vec![
            Body::Weights(weights(&spec().init(1))),
            Body::Task(gradient_task(vec![0, 1], Some(5))),
        ],
        Some(&path),
    );
    assert!(err.contains("no slot 5"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the worker wrote to it"
    );
}

#[test]
fn weights_that_are_not_numbers_are_refused() {
    let mut values = spec().init(1);
    values[17] = f32::NAN;
    let mut script = Script::honest(&spec());
    script.then = vec![message(Body::Weights(weights(&values)))];
    let err = refused(script);
    assert!(err.contains("weights") && err.contains("NaN"), "{err}");
}

#[test]
fn weights_of_the_wrong_length_are_refused() {
    let mut script = Script::honest(&spec());
    script.then = vec![message(Body::Weights(weights(&[0.5; 10])))];
    let err = refused(script);
    assert!(err.contains("10 weights for a model of"), "{err}");
}

#[test]
fn a_task_naming_images_past_the_end_is_answered_with_an_error() {
    let err = task_error(
        vec![
            Body::Weights(weights(&spec().init(1))),
            Body::Task(gradient_task(vec![0, 4_000_000_000], None)),
        ],
        None,
    );
    assert!(err.contains("4000000000"), "{err}");
}

/// Tasks that ride with the weights are queued after the weights load, in order: the good one
/// is answered with its gradient, the bad one after it with an error naming the image.
#[test]
fn tasks_riding_with_the_weights_are_run_in_order() {
    let mut script = Script::honest(&spec());
    let mut bad = gradient_task(vec![0, 4_000_000_000], None);
    bad.id = 2;
    script.then = vec![CoordinatorMessage {
        body: Some(Body::Weights(weights(&spec().init(1)))),
        tasks: vec![gradient_task(vec![0, 1, 2], None), bad],
    }];
    script.answers = 2;
    let fake = FakeCoordinator::start(script);
    let (_, err) = worker_against(&fake);
    let replies = fake.replies();
    assert_eq!(replies.len(), 2, "{replies:?}\n{err}");
    match &replies[0].body {
        Some(worker_message::Body::Gradient(g)) => assert_eq!((g.id, g.pairs), (1, 3)),
        other => panic!("the first answer is not task 1's gradient: {other:?}\n{err}"),
    }
    match &replies[1].body {
        Some(worker_message::Body::Error(e)) => {
            assert_eq!(e.id, 2);
            assert!(e.message.contains("4000000000"), "{}", e.message);
        }
        other => panic!("the second answer is not task 2's error: {other:?}\n{err}"),
    }
}

#[test]
fn a_message_with_neither_a_body_nor_tasks_is_refused() {
    let mut script = Script::honest(&spec());
    script.then = vec![
        message(Body::Weights(weights(&spec().init(1)))),
        CoordinatorMessage {
            body: None,
            tasks: Vec::new(),
        },
    ];
    let err = refused(script);
    assert!(err.contains("neither a body nor tasks"), "{err}");
}

#[test]
fn adam_settings_that_no_run_makes_are_refused() {
    let n = spec().num_params();
    for (json, want) in [
        (
            r#"{"lr":-1.0,"beta1":0.9,"beta2":0.999,"eps":1e-8}"#,
            "a learning rate of -1",
        ),
        (
            r#"{"lr":0.001,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":5.0}"#,
            "weight decay 5",
        ),
        (r#"{"lr":"fast"}"#, "Adam settings"),
    ] {
        let mut script = Script::honest(&spec());
        script.welcome.as_mut().unwrap().aggregation = "allreduce".into();
        script.then = vec![message(Body::State(ReplicaState {
            version: 0,
            params: encode_f32(&spec().init(1)),
            adam_m: encode_f32(&vec![0.0; n]),
            adam_v: encode_f32(&vec![0.0; n]),
            adam_config_json: json.into(),
        }))];
        let err = refused(script);
        assert!(
            err.contains("Adam settings") && err.contains(want),
            "{json}: {err}"
        );
    }
}
