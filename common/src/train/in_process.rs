//! A run in this process (`--workers 0`): the epoch loop against one local replica, inside a
//! compute pool of the run's threads, so the kernels' parallel loops start on the training
//! thread instead of handing every operation to another one.

use candle_core::Device;

use super::{LocalEngine, Noise, RunControl, TrainError, Trainer, TrainingData};
use crate::config::TrainConfig;
use crate::results::RunResults;

/// Trains `cfg` on `data` in this process and writes the results file and checkpoint; the
/// same shape as [`crate::cluster::train_on_cluster`].
pub fn train_in_process(
    cfg: &TrainConfig,
    data: TrainingData,
    control: RunControl<'_>,
) -> Result<RunResults, TrainError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads_per_process(1))
        .build()?;
    let dataset = data.dataset.clone();
    let mut trainer = Trainer::start(cfg.clone(), data)?;
    let mut engine = LocalEngine::new(
        trainer.spec(),
        trainer.params(),
        dataset,
        &Device::Cpu,
        cfg.micro_batch as usize,
    )?
    .with_noise(Noise::of(cfg));
    pool.install(|| trainer.run(&mut engine, control))
}
