//! A worker's own metrics (`worker --metrics-listen ADDR`): tasks by kind, where its time went,
//! sessions with the coordinator and whether one is open now.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A floating-point counter (seconds).
type FloatCounter = Counter<f64, AtomicU64>;

/// The worker's metrics; clones update the same values.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Arc<Registry>,
    tasks: Family<Vec<(String, String)>, Counter>,
    compute: FloatCounter,
    idle: FloatCounter,
    apply: FloatCounter,
    send: FloatCounter,
    sessions: Counter,
    connected: Gauge,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerMetrics")
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// Registers every worker metric under the `siamese_worker_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("siamese_worker");
        let m = WorkerMetrics {
            registry: Arc::new(Registry::default()),
            tasks: Family::default(),
            compute: FloatCounter::default(),
            idle: FloatCounter::default(),
            apply: FloatCounter::default(),
            send: FloatCounter::default(),
            sessions: Counter::default(),
            connected: Gauge::default(),
        };
        r.register(
            "tasks",
            "Tasks answered, by kind (gradient, embed, digest, state)",
            m.tasks.clone(),
        );
        for (name, what, counter) in [
            ("compute", "computing tasks", &m.compute),
            (
                "idle",
                "waiting for the coordinator's next message",
                &m.idle,
            ),
            (
                "apply",
                "loading weights and applying reduced gradients",
                &m.apply,
            ),
            ("send", "handing answers to the stream", &m.send),
        ] {
            r.register_with_unit(
                name,
                format!("Seconds spent {what}"),
                Unit::Seconds,
                counter.clone(),
            );
        }
        r.register(
            "sessions",
            "Sessions the coordinator admitted this worker into",
            m.sessions.clone(),
        );
        r.register(
            "connected",
            "1 while this worker is in a session with the coordinator",
            m.connected.clone(),
        );
        WorkerMetrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        super::encode(&self.registry)
    }

    /// A task of `kind` was computed in `seconds`.
    pub fn task(&self, kind: &str, seconds: f64) {
        self.tasks
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
        self.compute.inc_by(seconds.max(0.0));
    }

    /// Seconds spent waiting for the coordinator.
    pub fn idle(&self, seconds: f64) {
        self.idle.inc_by(seconds.max(0.0));
    }

    /// Seconds spent loading weights or applying a reduced gradient.
    pub fn apply(&self, seconds: f64) {
        self.apply.inc_by(seconds.max(0.0));
    }

    /// Seconds spent handing an answer to the stream.
    pub fn send(&self, seconds: f64) {
        self.send.inc_by(seconds.max(0.0));
    }

    /// A session began (`true`) or ended.
    pub fn connected(&self, open: bool) {
        if open {
            self.sessions.inc();
        }
        self.connected.set(i64::from(open));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_counted_by_kind_with_their_seconds() {
        let m = WorkerMetrics::new();
        m.task("gradient", 0.25);
        m.task("gradient", 0.5);
        m.task("embed", 0.25);
        m.connected(true);
        let text = m.render();
        for line in [
            "siamese_worker_tasks_total{kind=\"gradient\"} 2",
            "siamese_worker_tasks_total{kind=\"embed\"} 1",
            "siamese_worker_compute_seconds_total 1.0",
            "siamese_worker_sessions_total 1",
            "siamese_worker_connected 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
