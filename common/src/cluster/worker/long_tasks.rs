//! Threads for the tasks too long to compute on the thread that serves the connection.

use std::sync::Arc;

use crate::cluster::ClusterError;
use crate::data::Dataset;
use crate::train::Replica;

/// A compute pool for long tasks, as large as the worker's own: the worker's one runtime thread
/// lends its replica here and goes on answering the coordinator's keepalive PINGs, which a call
/// of seconds on that thread left unanswered (the worker was declared lost).
pub(super) struct LongTaskPool {
    pool: rayon::ThreadPool,
}

impl LongTaskPool {
    /// As many threads as the calling thread's compute pool has, so a sum is cut the same way,
    /// and has the same bits, as on the calling thread.
    pub(super) fn start() -> Result<Self, ClusterError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("long-task-{i}"))
            // A panic ends the job (and drops its sender, which the waiting thread reports as
            // an error) instead of aborting the process from a pool thread.
            .panic_handler(|_| ())
            .build()
            .map_err(|e| ClusterError::Setup(format!("starting the long-task threads: {e}")))?;
        Ok(LongTaskPool { pool })
    }

    /// `work` done with `replica` on this pool, awaited; the replica comes back with its result.
    pub(super) async fn lend<T: Send + 'static>(
        &self,
        mut replica: Replica,
        data: Arc<Dataset>,
        work: impl FnOnce(&mut Replica, &Dataset) -> T + Send + 'static,
    ) -> Result<(Replica, T), ClusterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let out = work(&mut replica, &data);
            let _ = tx.send((replica, out));
        });
        rx.await
            .map_err(|_| ClusterError::Setup("the thread computing a long task stopped".into()))
    }
}
