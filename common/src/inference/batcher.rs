//! Batching of concurrent requests: one compute thread takes every request waiting when it is
//! free and runs them as one forward pass. No request waits for others to arrive (a lone
//! request goes at once); under load, the requests that queued during a pass form the next
//! one, which costs the per-pass overhead once for all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::InferenceError;
use super::model::TrainedModel;

/// Requests that may wait for the compute thread; more are refused as busy, not queued.
const QUEUE: usize = 4096;

/// Images embedded for one request.
struct Job {
    /// The model's input values of `count` images.
    values: Vec<f32>,
    count: usize,
    reply: oneshot::Sender<Result<Vec<f32>, InferenceError>>,
}

/// How the batching went, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub passes: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Images embedded.
    pub images: AtomicU64,
}

/// A handle to the compute thread; clones share it. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    stats: Arc<BatchStats>,
    image_len: usize,
}

impl Batcher {
    /// Starts the compute thread with `threads` compute threads of its own; a pass holds at
    /// most `max_images` images (requests beyond wait for the next pass).
    pub fn start(
        model: Arc<TrainedModel>,
        threads: usize,
        max_images: usize,
    ) -> Result<Self, InferenceError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| InferenceError::Server(format!("starting the compute threads: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(BatchStats::default());
        let image_len = model.input_shape().len();
        let seen = stats.clone();
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || pool.install(|| compute(&model, rx, max_images.max(1), &seen)))
            .map_err(|e| InferenceError::Server(format!("starting the compute thread: {e}")))?;
        Ok(Batcher {
            jobs: tx,
            stats,
            image_len,
        })
    }

    /// Embeddings of `count` images given as the model's input values, computed in the next
    /// pass.
    pub async fn embed(&self, values: Vec<f32>, count: usize) -> Result<Vec<f32>, InferenceError> {
        if values.len() != count * self.image_len {
            return Err(InferenceError::Input {
                input: format!("{count} images"),
                why: format!(
                    "{} values, {} expected",
                    values.len(),
                    count * self.image_len
                ),
            });
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                values,
                count,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    InferenceError::Server(format!("busy: {QUEUE} requests are waiting"))
                }
                mpsc::error::TrySendError::Closed(_) => InferenceError::ComputeStopped,
            })?;
        answer.await.map_err(|_| InferenceError::ComputeStopped)?
    }

    /// How the batching went so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

/// The compute thread: every pass takes what is waiting, up to `max_images` images.
fn compute(
    model: &TrainedModel,
    mut jobs: mpsc::Receiver<Job>,
    max_images: usize,
    stats: &BatchStats,
) {
    let mut carried: Option<Job> = None;
    loop {
        let Some(first) = carried.take().or_else(|| jobs.blocking_recv()) else {
            return;
        };
        let mut images = first.count;
        let mut batch = vec![first];
        while images < max_images {
            match jobs.try_recv() {
                Ok(job) if images + job.count <= max_images => {
                    images += job.count;
                    batch.push(job);
                }
                Ok(job) => {
                    carried = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let values: Vec<f32> = match batch.len() {
            1 => std::mem::take(&mut batch[0].values),
            _ => batch
                .iter()
                .flat_map(|j| j.values.iter().copied())
                .collect(),
        };
        let result = model.embed_values(&values, images);
        stats.passes.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.images.fetch_add(images as u64, Ordering::Relaxed);
        let width = model.width();
        let mut at = 0;
        for job in batch {
            let answer = match &result {
                Ok(all) => Ok(all[at * width..(at + job.count) * width].to_vec()),
                Err(e) => Err(InferenceError::Server(format!(
                    "the forward pass failed: {e}"
                ))),
            };
            at += job.count;
            // A client that went away no longer waits for its answer.
            let _ = job.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::model::ModelSpec;

    /// Concurrent requests batched into shared passes each get their own rows, equal to what
    /// the model gives them alone.
    #[test]
    fn batched_requests_get_their_own_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let spec = ModelSpec::siamese(DatasetKind::Mnist, 10);
        spec.save(&spec.init(5), &path).unwrap();
        let model = Arc::new(TrainedModel::load(&path).unwrap());
        let batcher = Batcher::start(model.clone(), 1, 5).unwrap();
        let requests: Vec<(Vec<f32>, usize)> = (1..=6)
            .map(|n| {
                let values = (0..n * 784).map(|i| ((i * 31 + n) % 256) as f32 / 255.0);
                (values.collect(), n)
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answers = runtime.block_on(async {
            // Spawned first, awaited after: all six are queued together, as concurrent
            // clients' requests are.
            let handles: Vec<_> = requests
                .iter()
                .map(|(values, n)| {
                    let (b, values, n) = (batcher.clone(), values.clone(), *n);
                    tokio::spawn(async move { b.embed(values, n).await })
                })
                .collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        });
        for ((values, n), answer) in requests.iter().zip(answers) {
            assert_eq!(answer.unwrap(), model.embed_values(values, *n).unwrap());
        }
        let stats = batcher.stats();
        assert_eq!(stats.requests.load(Ordering::Relaxed), 6);
        assert_eq!(stats.images.load(Ordering::Relaxed), 21);
        assert!(stats.passes.load(Ordering::Relaxed) <= 6);
        // A request whose values do not make whole images is refused before it is queued.
        assert!(runtime.block_on(batcher.embed(vec![0.0; 3], 1)).is_err());
    }
}
