//! A misbehaving worker speaking the real protocol, for testing what the coordinator refuses.

use std::path::Path;
use std::time::Duration;

use siamese_common::cluster::protocol::proto::{
    CoordinatorMessage, GradientResult, Task, WorkerMessage, coordinator_message, task,
    worker_message,
};
use siamese_common::cluster::protocol::wire::encode_f32;

/// How the fake worker misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Every gradient holds a NaN.
    NanGradient,
    /// Every gradient is one value short.
    ShortGradient,
    /// Answers this many tasks, then drops its connection.
    VanishAfter(usize),
    /// Says its gradient is in shared memory it never mapped.
    ClaimsSharedMemory,
    /// Reports a NaN loss.
    NanLoss,
    /// Reports more correct pairs than its task had.
    MoreCorrectThanPairs,
    /// Sends a gradient of 16 million values.
    Oversized,
    /// Answers a task that was never sent.
    UnknownTask,
    /// Joins, then neither reads nor answers anything.
    NeverReads,
}

/// What one message from the coordinator held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its body: "weights", "reduced", "state", "task" or "other"; "none" without one.
    pub body: &'static str,
    /// The gradient tasks in it, the body's and those riding with it.
    pub gradient_tasks: usize,
}

impl Received {
    fn of(msg: &CoordinatorMessage) -> Received {
        let body = match &msg.body {
            Some(coordinator_message::Body::Weights(_)) => "weights",
            Some(coordinator_message::Body::Reduced(_)) => "reduced",
            Some(coordinator_message::Body::State(_)) => "state",
            Some(coordinator_message::Body::Task(_)) => "task",
            Some(_) => "other",
            None => "none",
        };
        let in_body = match &msg.body {
            Some(coordinator_message::Body::Task(t)) => Some(t),
            _ => None,
        };
        let gradient_tasks = in_body
            .into_iter()
            .chain(&msg.tasks)
            .filter(|t| matches!(t.kind, Some(task::Kind::Gradient(_))))
            .count();
        Received {
            body,
            gradient_tasks,
        }
    }
}

/// The tasks of a message in stream order: its body's, then those riding with it.
fn tasks_of(msg: CoordinatorMessage) -> Vec<Task> {
    let mut tasks = match msg.body {
        Some(coordinator_message::Body::Task(t)) => vec![t],
        _ => Vec::new(),
    };
    tasks.extend(msg.tasks);
    tasks
}

/// Joins `addr` with real data and misbehaves as told; returns when the session ends, with
/// what each message from the coordinator held.
pub async fn run(addr: &str, token: &str, data: &Path, fault: Fault) -> Vec<Received> {
    let super::fake_session::FakeSession {
        mut inbound,
        tx,
        spec,
    } = super::fake_session::open(addr, token, data, "cpu", "fake").await;
    if matches!(fault, Fault::NeverReads) {
        // Hold the session open without reading until the coordinator gives up on it.
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Vec::new();
    }
    let mut answered = 0;
    let mut received = Vec::new();
    while let Ok(Some(msg)) = inbound.message().await {
        received.push(Received::of(&msg));
        for t in tasks_of(msg) {
            let Some(task::Kind::Gradient(g)) = t.kind else {
                continue;
            };
            if matches!(fault, Fault::VanishAfter(n) if answered == n) {
                return received;
            }
            let pairs = g.first.len() as u32;
            let mut grad = vec![0.01f32; spec.num_params()];
            let mut reply = GradientResult {
                id: t.id,
                loss_sum: 0.1,
                correct: 0,
                pairs,
                compute_s: 0.001,
                in_shm: matches!(fault, Fault::ClaimsSharedMemory),
                ..GradientResult::default()
            };
            match fault {
                Fault::NanGradient => grad[7] = f32::NAN,
                Fault::ShortGradient => {
                    grad.pop();
                }
                Fault::NanLoss => reply.loss_sum = f64::NAN,
                Fault::MoreCorrectThanPairs => reply.correct = pairs + 1,
                Fault::Oversized => grad = vec![0.0; 16 << 20],
                Fault::UnknownTask => reply.id = t.id + 1_000_000,
                Fault::VanishAfter(_) | Fault::ClaimsSharedMemory | Fault::NeverReads => {}
            }
            reply.grad = encode_f32(&grad);
            if tx
                .send(WorkerMessage {
                    body: Some(worker_message::Body::Gradient(reply)),
                })
                .await
                .is_err()
            {
                return received;
            }
            answered += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    received
}
