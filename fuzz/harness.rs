//! What each fuzz target does with its bytes, shared by the targets (built by cargo-fuzz on
//! nightly) and by `tests/fuzz_replay.rs`, which replays every corpus file on stable in CI.
//!
//! Each function drives the project's own parsing and checking code, the code that runs on
//! bytes from outside: a data file, a peer's message, another process's shared-memory header.
//! None may panic, hang or allocate without bound, whatever the bytes; errors are expected and
//! ignored. Messages are read as a sequence of length-delimited protobufs, the way a gRPC stream
//! hands them over one after another.

// Each target binary uses one of these functions.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use candle_core::Device;
use prost::Message;
use siamese_common::aggregation::OptimizerState;
use siamese_common::cluster::coordinator::{
    check_join, checked_embeddings, checked_vector, figures_problem,
};
use siamese_common::cluster::protocol::proto::{
    CoordinatorMessage, ReplicaState, RunInfo, Weights, WorkerMessage, coordinator_message,
    worker_message,
};
use siamese_common::cluster::protocol::shm::parse_header;
use siamese_common::cluster::protocol::wire::{decode_f32, encode_f32};
use siamese_common::cluster::worker::{TaskRunner, check_welcome};
use siamese_common::data::{Dataset, DatasetKind, ImageSet, parse_cifar_batch, parse_idx_pair};
use siamese_common::inference::proto::{CompareRequest, EmbedRequest, Image, SearchRequest, image};
use siamese_common::inference::{Adapt, ImageShape, decode_image};
use siamese_common::model::ModelSpec;
use siamese_common::train::Replica;

/// An IDX image file and its label file: the first two bytes say where the images end.
pub fn idx(data: &[u8]) {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (images, labels) = rest.split_at(at);
    let _ = parse_idx_pair(images, labels);
}

/// A CIFAR-10 binary batch file.
pub fn cifar(data: &[u8]) {
    let _ = parse_cifar_batch(data);
}

/// The bytes of a shared-memory file as a worker maps them.
pub fn shm_header(data: &[u8]) {
    let _ = parse_header(data);
}

/// Messages a worker sends the coordinator, through the coordinator's checks of each.
pub fn coordinator_inbound(data: &[u8]) {
    let params = mnist_spec().num_params();
    let mut buf = data;
    while !buf.is_empty() {
        let Ok(message) = WorkerMessage::decode_length_delimited(&mut buf) else {
            return;
        };
        match message.body {
            Some(worker_message::Body::Join(join)) => {
                let _ = check_join(&join, "mnist");
            }
            Some(worker_message::Body::Gradient(r)) => {
                let _ = figures_problem(&r, 8);
                let _ = checked_vector(decode_f32(&r.grad), params);
            }
            Some(worker_message::Body::Embedding(e)) => {
                let _ = checked_embeddings(&e.values, 4, 10);
            }
            Some(worker_message::Body::State(s)) => {
                for bytes in [&s.params, &s.adam_m, &s.adam_v] {
                    let _ = checked_vector(decode_f32(bytes), params);
                }
            }
            _ => {}
        }
    }
}

/// What a worker receives: the Run RPC's RunInfo (the whole input), then the session's
/// messages: a Welcome, checked as the session checks it, then the run's state and tasks
/// through the worker's task loop on a real (CPU) replica, which answers every task it can
/// run. The first byte chooses a replica whose Adam is the coordinator's or its own.
pub fn worker_inbound(data: &[u8]) {
    if let Ok(info) = RunInfo::decode(data) {
        let _ = info.dataset.parse::<DatasetKind>();
    }
    let Some((&mode, mut buf)) = data.split_first() else {
        return;
    };
    let spec = mnist_spec();
    let (weights, data_set) = fixtures();
    let Ok(replica) = Replica::new(spec, weights, &Device::Cpu) else {
        return;
    };
    let replicated = mode & 1 == 1;
    let optimizer = replicated.then(|| OptimizerState::new(vec![0.0; weights.len()], 1e-3));
    let mut runner = TaskRunner::new(
        replica,
        Device::Cpu,
        data_set.clone(),
        None,
        (optimizer, None),
    );
    // Weights at version 0 first, as after a join, so that tasks the fuzzer writes can run.
    let start = if replicated {
        let zeros = encode_f32(&vec![0.0; weights.len()]);
        coordinator_message::Body::State(ReplicaState {
            version: 0,
            params: encode_f32(weights),
            adam_m: zeros.clone(),
            adam_v: zeros,
            adam_config_json: r#"{"lr":0.001,"beta1":0.9,"beta2":0.999,"eps":1e-8}"#.into(),
        })
    } else {
        coordinator_message::Body::Weights(Weights {
            version: 0,
            values: encode_f32(weights),
            in_shm: false,
        })
    };
    let start = CoordinatorMessage {
        body: Some(start),
        tasks: Vec::new(),
    };
    if runner.take(start).is_err() {
        return;
    }
    let mut first = true;
    while !buf.is_empty() {
        let Ok(message) = CoordinatorMessage::decode_length_delimited(&mut buf) else {
            return;
        };
        if std::mem::take(&mut first)
            && let Some(coordinator_message::Body::Welcome(w)) = &message.body
        {
            let _ = check_welcome(w, (1, 28, 28));
            continue;
        }
        match runner.take(message) {
            Ok(None) => while runner.run_next().is_some() {},
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// Requests to `coordinator serve`: the first byte chooses Embed, Compare or Search; every
/// image in it is decoded (PNG or JPEG, resized and converted as the widest options allow) or
/// checked as raw pixels against a 1x28x28 model.
pub fn inference_inbound(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let images: Vec<Image> = match kind % 3 {
        0 => EmbedRequest::decode(rest)
            .map(|r| r.images)
            .unwrap_or_default(),
        1 => CompareRequest::decode(rest)
            .map(|r| r.a.into_iter().chain(r.b).collect())
            .unwrap_or_default(),
        _ => SearchRequest::decode(rest)
            .map(|r| r.query.into_iter().collect())
            .unwrap_or_default(),
    };
    let want = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let adapt = Adapt {
        resize: true,
        convert: true,
    };
    for img in images {
        if let Some(image::Data::Encoded(bytes)) = img.data {
            let _ = decode_image(&bytes, "fuzzed image", want, adapt);
        }
    }
}

fn mnist_spec() -> ModelSpec {
    ModelSpec::siamese(DatasetKind::Mnist, 10)
}

/// Seeded weights and eight training and eight test images, made once per process.
fn fixtures() -> (&'static [f32], &'static Arc<Dataset>) {
    static FIXTURES: OnceLock<(Vec<f32>, Arc<Dataset>)> = OnceLock::new();
    let (weights, data) = FIXTURES.get_or_init(|| {
        let n = 8;
        let pixels: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 37 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let set = || {
            ImageSet::new(pixels.clone(), labels.clone(), 1, 28, 28)
                .expect("a well-formed fixed image set")
        };
        let data = Dataset {
            kind: DatasetKind::Mnist,
            train: set(),
            test: set(),
        };
        (mnist_spec().init(1), Arc::new(data))
    });
    (weights, data)
}
