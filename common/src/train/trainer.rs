//! The epoch loop: draws pairs, asks the engine for each batch's gradient, applies Adam, and
//! evaluates. The same loop drives one process and the whole cluster.

use std::sync::Arc;
use std::time::Instant;

use super::eval::{pair_figures, score_pairs, test_record};
use super::{Engine, ImageSplit, TrainError};
use crate::aggregation::OptimizerState;
use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::pairs::{Pair, batches, split, test_pairs, training_pairs, validation_pairs};
use crate::results::{EpochRecord, RunResults, StepTiming};
use crate::stop::StopFlag;

/// The dataset plus the fixed split and the pairs that do not change between epochs.
pub struct TrainingData {
    /// The decoded images.
    pub dataset: Arc<Dataset>,
    /// Training-split indices into the training file.
    pub train_pool: Vec<u32>,
    /// Validation-split indices into the training file (all of them; the classifier's
    /// validation set).
    pub val_pool: Vec<u32>,
    /// Validation pairs, drawn once.
    pub val_pairs: Vec<Pair>,
    /// Test pairs (all 10,000 unless a prefix was asked for).
    pub test_pairs: Vec<Pair>,
}

impl TrainingData {
    /// Applies the spec's split and pair protocol (and any subset flags) to a loaded dataset.
    pub fn prepare(cfg: &TrainConfig, dataset: Arc<Dataset>) -> Result<Self, TrainError> {
        let (n_train, n_val) = dataset.kind.train_val_sizes();
        let total = dataset.train.len();
        if total < n_train + n_val {
            return Err(TrainError::Config(format!(
                "the training file holds {total} images, the {} split needs {}",
                dataset.kind.name(),
                n_train + n_val
            )));
        }
        let s = split(total, n_train, n_val)?;
        let mut train_pool = s.train;
        if let Some(n) = cfg.train_subset {
            train_pool.truncate(n);
        }
        let labels = dataset.train.labels();
        let mut val_pairs = validation_pairs(labels, &s.val, cfg.seed)?;
        if let Some(n) = cfg.val_pairs {
            val_pairs.truncate(n);
        }
        let mut test = test_pairs(dataset.test.labels())?;
        if let Some(n) = cfg.test_pairs {
            test.truncate(n);
        }
        Ok(TrainingData {
            dataset,
            train_pool,
            val_pool: s.val,
            val_pairs,
            test_pairs: test,
        })
    }
}

/// What [`Trainer::timed_steps`] measured after its warm-up.
#[derive(Clone, Debug)]
pub struct TimedSteps {
    /// Steps measured.
    pub steps: usize,
    /// Pairs trained in them.
    pub pairs: usize,
    /// Wall-clock seconds they took.
    pub seconds: f64,
    /// Their step-time split.
    pub timing: StepTiming,
}

/// What the caller of a training run sees and controls.
pub struct RunControl<'a> {
    /// Called with every epoch's figures as the epoch ends.
    pub on_epoch: &'a mut (dyn FnMut(&EpochRecord) + Send),
    /// Raised to end the run at the next step boundary.
    pub stop: StopFlag,
}

/// The optimizer side of a run: parameters, Adam state and the loop.
pub struct Trainer {
    cfg: TrainConfig,
    spec: ModelSpec,
    data: TrainingData,
    state: OptimizerState,
    /// Optimizer steps taken so far (also by replicas that step themselves).
    steps: u64,
    stop: StopFlag,
}

impl Trainer {
    /// A trainer starting from the seeded initial weights.
    pub fn new(cfg: TrainConfig, data: TrainingData) -> Self {
        let spec = ModelSpec::siamese(data.dataset.kind, cfg.embedding as usize);
        let state = OptimizerState::new(spec.init(cfg.seed), cfg.lr);
        Trainer {
            cfg,
            spec,
            data,
            state,
            steps: 0,
            stop: StopFlag::new(),
        }
    }

    /// Ends the run at the next step boundary once `stop` is raised.
    pub fn stop_on(&mut self, stop: StopFlag) {
        self.stop = stop;
    }

    /// The model layout.
    pub fn spec(&self) -> ModelSpec {
        self.spec
    }

    /// Current parameters.
    pub fn params(&self) -> &[f32] {
        &self.state.params
    }

    /// The prepared data.
    pub fn data(&self) -> &TrainingData {
        &self.data
    }

    fn unit(&self) -> (f32, f32) {
        let p = &self.state.params;
        (p[p.len() - 2], p[p.len() - 1])
    }

    /// Applies a step's mean gradient here and sends the weights, unless the replicas step
    /// the optimizer themselves.
    fn step(
        &mut self,
        engine: &mut dyn Engine,
        grad: &[f32],
        epoch: usize,
        step: usize,
    ) -> Result<(), TrainError> {
        if engine.replicas_step() {
            return Ok(());
        }
        self.state
            .apply(grad)
            .map_err(|source| TrainError::Aggregation {
                epoch,
                step,
                source,
            })?;
        engine.set_weights(&self.state.params)
    }

    fn check_stop(&self) -> Result<(), TrainError> {
        match self.stop.requested() {
            true => Err(TrainError::Interrupted),
            false => Ok(()),
        }
    }

    /// Trains one epoch; returns its record (validation included).
    pub fn epoch(
        &mut self,
        engine: &mut dyn Engine,
        epoch: usize,
    ) -> Result<EpochRecord, TrainError> {
        let pairs = training_pairs(
            self.data.dataset.train.labels(),
            &self.data.train_pool,
            self.cfg.seed,
            epoch as u64,
        )?;
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let start = Instant::now();
        let mut steps = batches(&pairs, self.cfg.batch_size as usize)
            .enumerate()
            .peekable();
        while let Some((step, batch)) = steps.next() {
            if self.cfg.max_steps.is_some_and(|m| self.steps >= m) {
                break;
            }
            self.check_stop()?;
            let c = engine.gradient(batch)?;
            let last = self.cfg.max_steps.is_some_and(|m| self.steps + 1 >= m);
            if let Some((_, next)) = steps.peek().filter(|_| !last) {
                engine.prefetch(next)?;
            }
            self.step(engine, &c.grad, epoch, step)?;
            self.steps += 1;
            loss_sum += c.loss_sum;
            correct += c.correct;
            seen += c.pairs;
        }
        let seconds = start.elapsed().as_secs_f64();
        if engine.replicas_step() {
            self.state.params = engine.pull_weights()?;
        }
        let scored = score_pairs(engine, ImageSplit::Train, &self.data.val_pairs, self.unit())?;
        let val = pair_figures(&scored.scores, &self.data.val_pairs);
        Ok(EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            seconds,
            pairs_per_s: seen as f64 / seconds.max(1e-9),
        })
    }

    /// Takes `warmup` and then `steps` optimizer steps of batch `batch` on the training pairs
    /// (epoch after epoch as needed) and measures the second part only, for benchmarks.
    pub fn timed_steps(
        &mut self,
        engine: &mut dyn Engine,
        batch: usize,
        warmup: usize,
        steps: usize,
    ) -> Result<TimedSteps, TrainError> {
        engine.set_weights(&self.state.params)?;
        let total = warmup + steps;
        let mut queue: Vec<Pair> = Vec::new();
        let mut epoch = 0u64;
        while queue.len() < (total + 1) * batch {
            epoch += 1;
            let labels = self.data.dataset.train.labels();
            queue.extend(training_pairs(
                labels,
                &self.data.train_pool,
                self.cfg.seed,
                epoch,
            )?);
        }
        let mut start = Instant::now();
        let mut before = engine.timing();
        let mut pairs = 0usize;
        for step in 0..total {
            if step == warmup {
                start = Instant::now();
                before = engine.timing();
                pairs = 0;
            }
            self.check_stop()?;
            let current = &queue[step * batch..(step + 1) * batch];
            let c = engine.gradient(current)?;
            if step + 1 < total {
                engine.prefetch(&queue[(step + 1) * batch..(step + 2) * batch])?;
            }
            self.step(engine, &c.grad, epoch as usize, step)?;
            pairs += c.pairs;
        }
        let seconds = start.elapsed().as_secs_f64();
        if engine.replicas_step() {
            self.state.params = engine.pull_weights()?;
        }
        Ok(TimedSteps {
            steps,
            pairs,
            seconds,
            timing: engine.timing().since(&before),
        })
    }

    /// The whole run: every epoch (checkpointing after each), then the test figures.
    pub fn run(
        &mut self,
        engine: &mut dyn Engine,
        control: RunControl<'_>,
    ) -> Result<RunResults, TrainError> {
        self.stop = control.stop;
        let on_epoch = control.on_epoch;
        let out = self.cfg.out_path();
        let checkpoint = self.cfg.checkpoint_path(&out);
        if let Some(dir) = checkpoint.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        engine.set_weights(&self.state.params)?;
        let mut epochs = Vec::new();
        for epoch in 1..=self.cfg.epochs() {
            let record = self.epoch(engine, epoch)?;
            self.spec.save(&self.state.params, &checkpoint)?;
            on_epoch(&record);
            epochs.push(record);
            if self.cfg.max_steps.is_some_and(|m| self.steps >= m) {
                break;
            }
        }
        let ds = &self.data.dataset;
        let test = test_record(
            engine,
            &self.data.test_pairs,
            ds.test.labels(),
            &self.data.train_pool,
            ds.train.labels(),
            self.unit(),
        )?;
        let info = engine.info();
        let timing = engine.timing();
        let mut config = serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = config.as_object_mut() {
            obj.insert("epochs".into(), self.cfg.epochs().into());
            obj.insert("out".into(), out.display().to_string().into());
            obj.insert("checkpoint".into(), checkpoint.display().to_string().into());
        }
        let results = RunResults {
            dataset: ds.kind.name().to_string(),
            workers: info.workers,
            device: info.device,
            aggregation: info.aggregation,
            config,
            epochs,
            test,
            timing,
            parameters: self.state.params.len(),
        };
        results.write(&out).map_err(|e| TrainError::Io {
            path: out.clone(),
            source: e,
        })?;
        Ok(results)
    }
}
