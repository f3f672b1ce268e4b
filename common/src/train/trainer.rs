//! The epoch loop: draws pairs, asks the engine for each batch's gradient, applies Adam,
//! evaluates, and checkpoints; a run resumed from its checkpoint continues exactly where it
//! stopped. The same loop drives one process and the whole cluster.

use std::time::Instant;

use super::checkpoint::{BestWeights, Checkpoint, CheckpointError, EpochProgress, Position};
use super::eval::{pair_figures, score_pairs, test_record};
use super::observer::{NoObserver, RunObserver, RunPlan, StepReport, TestScores};
use super::output_files::{AVERAGE_WEIGHTS_EXTENSION, BEST_WEIGHTS_EXTENSION};
use super::recipe::Selection;
use super::run_identity::RunIdentity;
use super::training_data::TrainingData;
use super::weight_average::WeightAverage;
use super::{Engine, ImageSplit, TrainError};
use crate::aggregation::{Aggregation, OptimizerState};
use crate::config::{Resume, TrainConfig};
use crate::data::TestAugment;
use crate::model::ModelSpec;
use crate::optim::AdamConfig;
use crate::pairs::{Pair, training_pairs};
use crate::results::{EpochRecord, RunResults, SelectionRecord, StepTiming};
use crate::stop::StopFlag;

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
    /// Hears of every step, epoch, checkpoint and the test scores (progress, metrics).
    pub observer: &'a mut (dyn RunObserver + Send),
    /// Raised to end the run at the next step boundary, after writing the checkpoint.
    pub stop: StopFlag,
}

/// The optimizer side of a run: the state, where the run stands, and the loop.
pub struct Trainer {
    cfg: TrainConfig,
    spec: ModelSpec,
    data: TrainingData,
    identity: RunIdentity,
    state: OptimizerState,
    /// The replicas stepped past `state` themselves (NCCL): pull it before using it.
    stale: bool,
    position: Position,
    progress: EpochProgress,
    epochs: Vec<EpochRecord>,
    membership: Vec<crate::results::MembershipEvent>,
    stop: StopFlag,
    /// The last state written (or the start's): what a regroup goes back to.
    last_saved: Option<Checkpoint>,
    /// The best epoch so far by validation accuracy.
    best: Option<BestWeights>,
    /// Epochs after which a plateau divided the learning rate by 10 (`--lr-drops`).
    lr_drops: Vec<usize>,
    /// The weights the finished run tested (`--select`), once it has.
    tested: Option<OptimizerState>,
    /// The weights' moving average (`--ema`): what validation, `--select` and the test score.
    average: Option<WeightAverage>,
}

/// Regroups a run may go through before it gives up.
const MAX_REGROUPS: usize = 8;

impl Trainer {
    /// A trainer starting from the seeded initial weights.
    pub fn new(cfg: TrainConfig, data: TrainingData) -> Self {
        let spec = ModelSpec::siamese(data.dataset.kind, cfg.embedding as usize);
        let steps_per_epoch = data
            .train_pool
            .len()
            .div_ceil(cfg.batch_size.max(1) as usize);
        let adam = AdamConfig {
            lr: cfg.lr,
            weight_decay: cfg.recipe.weight_decay,
            schedule: cfg.recipe.lr_schedule,
            total_steps: (cfg.epochs() * steps_per_epoch) as u64,
            ..AdamConfig::default()
        };
        let state = OptimizerState::with_config(spec.init(cfg.seed), adam);
        let ema = cfg.recipe.ema;
        let average = (ema != 0.0).then(|| WeightAverage::new(ema, &state.params));
        let identity = RunIdentity::of(&cfg, &data.dataset);
        Trainer {
            cfg,
            spec,
            data,
            identity,
            state,
            stale: false,
            position: Position {
                steps: 0,
                epoch: 1,
                step_in_epoch: 0,
            },
            progress: EpochProgress::default(),
            epochs: Vec::new(),
            membership: Vec::new(),
            stop: StopFlag::new(),
            last_saved: None,
            best: None,
            lr_drops: Vec::new(),
            tested: None,
            average,
        }
    }

    /// A trainer for `cfg`: fresh, or continuing the checkpoint `--resume` names (refused when
    /// it belongs to another run).
    pub fn start(cfg: TrainConfig, data: TrainingData) -> Result<Self, TrainError> {
        cfg.check().map_err(TrainError::Config)?;
        let Some(path) = cfg.resume_from()? else {
            if cfg.resume == Some(Resume::Auto) {
                let path = cfg.checkpoint_path(&cfg.out_path());
                tracing::info!(checkpoint = %path.display(), "--resume auto: no checkpoint yet, starting fresh");
            }
            return Ok(Trainer::new(cfg, data));
        };
        let checkpoint = Checkpoint::read(&path)?;
        let mut trainer = Trainer::new(cfg, data);
        let differences = trainer.identity.differences(&checkpoint.identity);
        if !differences.is_empty() || checkpoint.spec != trainer.spec {
            return Err(CheckpointError::OtherRun { path, differences }.into());
        }
        tracing::info!(
            checkpoint = %path.display(),
            steps = checkpoint.position.steps,
            epoch = checkpoint.position.epoch,
            step_in_epoch = checkpoint.position.step_in_epoch,
            "resuming"
        );
        trainer.state = checkpoint.state;
        trainer.position = checkpoint.position;
        trainer.progress = checkpoint.progress;
        trainer.epochs = checkpoint.epochs;
        trainer.membership = checkpoint.membership;
        trainer.best = checkpoint.best;
        trainer.lr_drops = checkpoint.lr_drops;
        match (&mut trainer.average, checkpoint.average) {
            (Some(average), Some(params)) => average.params = params,
            (Some(_), None) => {
                let why = "it has no ema.* tensors, which --ema continues from".into();
                return Err(CheckpointError::Format { path, why }.into());
            }
            (None, _) => {}
        }
        Ok(trainer)
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

    /// Weights and Adam's state.
    pub fn state(&self) -> &OptimizerState {
        &self.state
    }

    /// The weights the finished run tested (`--select`); the current ones before it finished.
    pub fn tested(&self) -> &OptimizerState {
        self.tested.as_ref().unwrap_or(&self.state)
    }

    /// Where the run stands.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The prepared data.
    pub fn data(&self) -> &TrainingData {
        &self.data
    }

    /// Brings `state` up to the replicas' when they stepped it themselves (NCCL).
    fn refresh(&mut self, engine: &mut dyn Engine) -> Result<(), TrainError> {
        if self.stale {
            if let Some(state) = engine.pull_state()? {
                self.state = state;
            }
            self.stale = false;
        }
        Ok(())
    }

    /// Applies a step's mean gradient to the state and lets the engine pass it on; engines
    /// whose replicas reduce among themselves (NCCL) hand over no mean.
    fn step(
        &mut self,
        engine: &mut dyn Engine,
        grad: Option<&[f32]>,
        epoch: usize,
        step: usize,
    ) -> Result<(), TrainError> {
        match grad {
            Some(mean) => self
                .state
                .apply(mean)
                .map_err(|source| TrainError::Aggregation {
                    epoch,
                    step,
                    source,
                })?,
            None => self.stale = true,
        }
        if let Some(average) = &mut self.average {
            average.update(&self.state.params);
        }
        engine.stepped(&self.state)
    }

    fn checkpoint_path(&self) -> std::path::PathBuf {
        self.cfg.checkpoint_path(&self.cfg.out_path())
    }

    /// The run's state at this step boundary.
    fn snapshot(&self, engine: &dyn Engine) -> Checkpoint {
        let mut membership = self.membership.clone();
        membership.extend(engine.membership());
        Checkpoint {
            identity: self.identity.clone(),
            spec: self.spec,
            state: self.state.clone(),
            position: self.position,
            progress: self.progress,
            epochs: self.epochs.clone(),
            membership,
            best: self.best.clone(),
            lr_drops: self.lr_drops.clone(),
            average: self.average.as_ref().map(|a| a.params.clone()),
        }
    }

    /// Writes the run's state at this step boundary.
    pub fn write_checkpoint(&mut self, engine: &mut dyn Engine) -> Result<(), TrainError> {
        self.refresh(engine)?;
        let checkpoint = self.snapshot(engine);
        let path = self.checkpoint_path();
        checkpoint.write(&path)?;
        tracing::debug!(path = %path.display(), steps = self.position.steps, "checkpoint written");
        self.last_saved = Some(checkpoint);
        Ok(())
    }

    /// Goes back to the last saved state and has the engine form its group again on it.
    fn regroup(&mut self, engine: &mut dyn Engine, why: &str) -> Result<(), TrainError> {
        let Some(saved) = self.last_saved.clone() else {
            return Err(TrainError::Regroup(why.to_string()));
        };
        tracing::warn!(%why, steps = saved.position.steps, "going back to the last checkpoint");
        self.state = saved.state;
        self.stale = false;
        self.position = saved.position;
        self.progress = saved.progress;
        self.epochs = saved.epochs;
        self.best = saved.best;
        self.lr_drops = saved.lr_drops;
        if let (Some(average), Some(params)) = (&mut self.average, saved.average) {
            average.params = params;
        }
        engine.regroup(&self.state)
    }

    fn steps_left(&self) -> bool {
        self.cfg.max_steps.is_none_or(|m| self.position.steps < m)
    }

    /// Whether `--patience` epochs have passed without a better validation accuracy, counted
    /// from the best epoch or from the last drop of the rate after it.
    fn plateaued(&self) -> bool {
        let (Some(patience), Some(best)) = (self.cfg.recipe.patience, &self.best) else {
            return false;
        };
        let since = self
            .lr_drops
            .last()
            .map_or(best.epoch, |&d| d.max(best.epoch));
        let last = self.position.epoch.saturating_sub(1);
        last >= since + patience as usize
    }

    /// Whether `--lr-drops` allows another drop of the rate.
    fn drops_left(&self) -> bool {
        self.lr_drops.len() < self.cfg.recipe.lr_drops as usize
    }

    /// Whether training ends: a plateau with no drop of the rate left (`--lr-drops`).
    fn patience_exhausted(&self) -> bool {
        self.plateaued() && !self.drops_left()
    }

    /// Whether `--lr-drop-after` lists the last finished epoch and its drop is still to come.
    fn scheduled_drop_due(&self) -> bool {
        let last = self.position.epoch.saturating_sub(1);
        u32::try_from(last).is_ok_and(|e| self.cfg.recipe.lr_drop_after.contains(&e))
            && self.lr_drops.last() != Some(&last)
    }

    /// On a plateau with a drop left, or after an epoch `--lr-drop-after` lists, divides the
    /// learning rate by 10 and gives the replicas the new rate (those that step Adam
    /// themselves need it before the next step).
    fn drop_rate(&mut self, engine: &mut dyn Engine) -> Result<(), TrainError> {
        let why = if self.plateaued() && self.drops_left() {
            "validation has not improved for --patience epochs: learning rate divided by 10"
        } else if self.scheduled_drop_due() {
            "--lr-drop-after: learning rate divided by 10"
        } else {
            return Ok(());
        };
        self.refresh(engine)?;
        self.state.adam.config.lr /= 10.0;
        let epoch = self.position.epoch.saturating_sub(1);
        self.lr_drops.push(epoch);
        tracing::info!(
            epoch,
            lr = self.state.adam.config.lr,
            drop = self.lr_drops.len(),
            "{why}"
        );
        engine.load_state(&self.state)
    }

    /// Keeps the weights after a finished epoch when its validation accuracy beats every
    /// earlier one's (the earliest wins a tie).
    fn consider_best(&mut self, record: &EpochRecord) {
        if self
            .best
            .as_ref()
            .is_none_or(|b| record.val_accuracy > b.val_accuracy)
        {
            self.best = Some(BestWeights {
                epoch: record.epoch,
                val_accuracy: record.val_accuracy,
                params: self.evaluated_params().to_vec(),
            });
        }
    }

    /// Writes the checkpoint and tells the observer.
    fn checkpoint(
        &mut self,
        engine: &mut dyn Engine,
        observer: &mut dyn RunObserver,
    ) -> Result<(), TrainError> {
        self.write_checkpoint(engine)?;
        observer.checkpoint_written(self.position.steps);
        Ok(())
    }

    /// The run's shape from where it stands.
    fn plan(&self) -> RunPlan {
        let batch = self.cfg.batch_size as usize;
        let steps_per_epoch = self.data.train_pool.len().div_ceil(batch.max(1));
        let all = (self.cfg.epochs() * steps_per_epoch) as u64;
        RunPlan {
            epochs: self.cfg.epochs(),
            steps_per_epoch,
            total_steps: self.cfg.max_steps.map_or(all, |m| m.min(all)),
            batch_size: batch,
            start: self.position,
        }
    }

    /// Trains from the current position to the end of its epoch (or the step limit); returns
    /// whether the epoch finished. A raised stop flag writes the checkpoint and ends the run.
    fn train_epoch(
        &mut self,
        engine: &mut dyn Engine,
        observer: &mut dyn RunObserver,
    ) -> Result<bool, TrainError> {
        let epoch = self.position.epoch;
        let pairs = training_pairs(
            self.data.dataset.train.labels(),
            &self.data.train_pool,
            self.cfg.seed,
            epoch as u64,
        )?;
        let batch = self.cfg.batch_size as usize;
        let chunks: Vec<&[Pair]> = pairs.chunks(batch).collect();
        let every = self.cfg.checkpoint_every;
        observer.epoch_started(epoch, chunks.len(), self.position.step_in_epoch);
        let mut start = Instant::now();
        while self.position.step_in_epoch < chunks.len() {
            if !self.steps_left() {
                self.progress.seconds += start.elapsed().as_secs_f64();
                return Ok(false);
            }
            if self.stop.requested() {
                self.progress.seconds += start.elapsed().as_secs_f64();
                self.checkpoint(engine, observer)?;
                return Err(TrainError::Interrupted);
            }
            let index = self.position.step_in_epoch;
            let current = chunks[index];
            let last = self
                .cfg
                .max_steps
                .is_some_and(|m| self.position.steps + 1 >= m);
            if let Some(next) = chunks.get(index + 1).filter(|_| !last) {
                engine.prefetch(next)?;
            }
            let c = match engine.gradient(current, &self.state) {
                // Asked to stop mid-step (a cluster short of workers): the step was not
                // applied, so the state is still this step boundary's.
                Err(TrainError::Interrupted) if !self.stale => {
                    self.progress.seconds += start.elapsed().as_secs_f64();
                    self.checkpoint(engine, observer)?;
                    return Err(TrainError::Interrupted);
                }
                other => other?,
            };
            self.step(engine, c.grad.as_deref(), epoch, index)?;
            self.position.steps += 1;
            self.position.step_in_epoch += 1;
            self.progress.loss_sum += c.loss_sum;
            self.progress.correct += c.correct;
            self.progress.seen += c.pairs;
            let seen = self.progress.seen.max(1) as f64;
            observer.step(&StepReport {
                position: self.position,
                steps_in_epoch: chunks.len(),
                pairs: c.pairs,
                loss_sum: c.loss_sum,
                correct: c.correct,
                epoch_loss: self.progress.loss_sum / seen,
                epoch_accuracy: self.progress.correct as f64 / seen,
                engine: &*engine,
            });
            if every > 0 && self.position.steps.is_multiple_of(every) {
                self.progress.seconds += start.elapsed().as_secs_f64();
                self.checkpoint(engine, observer)?;
                start = Instant::now();
            }
        }
        self.progress.seconds += start.elapsed().as_secs_f64();
        Ok(true)
    }

    /// The weights validation and the test score: the moving average where `--ema` keeps one.
    fn evaluated_params(&self) -> &[f32] {
        self.average
            .as_ref()
            .map_or(&self.state.params, |a| &a.params)
    }

    /// The state with the moving average for weights, where `--ema` keeps one.
    fn averaged_state(&self) -> Option<OptimizerState> {
        self.average.as_ref().map(|a| OptimizerState {
            params: a.params.clone(),
            adam: self.state.adam.clone(),
        })
    }

    /// Refuses `--ema` where the trainer does not see every step's weights: NCCL replicas
    /// step them on their GPUs, and pulling them back each step would cost more than the step.
    fn check_average(&self, engine: &dyn Engine) -> Result<(), TrainError> {
        match self.average.is_some() && engine.info().aggregation == Aggregation::Nccl.name() {
            true => Err(TrainError::Config(
                "--ema needs every step's weights on the coordinator, but --aggregation nccl steps them on the GPUs alone: use --aggregation allreduce with --ema".into(),
            )),
            false => Ok(()),
        }
    }

    /// The epoch's record from its running sums and a validation pass.
    fn close_epoch(&mut self, engine: &mut dyn Engine) -> Result<EpochRecord, TrainError> {
        self.refresh(engine)?;
        // The replicas score the weights they hold: the average for the pass, then the
        // trained weights back for the next step.
        let averaged = self.averaged_state();
        if let Some(state) = &averaged {
            engine.load_state(state)?;
        }
        // Validation chooses epochs and drops the rate, so it sees the images as training does:
        // --test-augment never changes what is trained.
        let scored = score_pairs(
            engine,
            averaged.as_ref().unwrap_or(&self.state),
            ImageSplit::Train,
            &self.data.val_pairs,
            TestAugment::None,
        )?;
        if averaged.is_some() {
            engine.load_state(&self.state)?;
        }
        let val = pair_figures(&scored.scores, &self.data.val_pairs);
        let p = self.progress;
        Ok(EpochRecord {
            epoch: self.position.epoch,
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_accuracy: p.correct as f64 / p.seen.max(1) as f64,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            seconds: p.seconds,
            pairs_per_s: p.seen as f64 / p.seconds.max(1e-9),
        })
    }

    /// Trains one whole epoch from its start; returns its record (validation included).
    pub fn epoch(
        &mut self,
        engine: &mut dyn Engine,
        epoch: usize,
    ) -> Result<EpochRecord, TrainError> {
        self.position.epoch = epoch;
        self.position.step_in_epoch = 0;
        self.progress = EpochProgress::default();
        self.train_epoch(engine, &mut NoObserver)?;
        self.close_epoch(engine)
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
        self.check_average(engine)?;
        engine.load_state(&self.state)?;
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
            if self.stop.requested() {
                return Err(TrainError::Interrupted);
            }
            let current = &queue[step * batch..(step + 1) * batch];
            if step + 1 < total {
                engine.prefetch(&queue[(step + 1) * batch..(step + 2) * batch])?;
            }
            let c = engine.gradient(current, &self.state)?;
            self.step(engine, c.grad.as_deref(), epoch as usize, step)?;
            pairs += c.pairs;
        }
        let seconds = start.elapsed().as_secs_f64();
        self.refresh(engine)?;
        Ok(TimedSteps {
            steps,
            pairs,
            seconds,
            timing: engine.timing().since(&before),
        })
    }

    /// The whole run from where it stands: every remaining epoch (checkpointing at each end,
    /// every --checkpoint-every steps and when asked to stop), then the test figures and the
    /// results file.
    pub fn run(
        &mut self,
        engine: &mut dyn Engine,
        control: RunControl<'_>,
    ) -> Result<RunResults, TrainError> {
        self.stop = control.stop;
        let observer = control.observer;
        self.check_average(engine)?;
        engine.load_state(&self.state)?;
        // A checkpoint that ended on a plateau (run before with fewer --lr-drops) goes on at
        // the rate an uninterrupted run would have dropped to after that epoch.
        self.drop_rate(engine)?;
        self.last_saved = Some(self.snapshot(engine));
        observer.run_started(&self.plan());
        let mut regroups = 0;
        while self.position.epoch <= self.cfg.epochs()
            && self.steps_left()
            && !self.patience_exhausted()
        {
            match self.run_epoch(engine, observer) {
                Ok(true) => {}
                Ok(false) => break,
                Err(TrainError::Regroup(why)) if regroups < MAX_REGROUPS => {
                    regroups += 1;
                    self.regroup(engine, &why)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.finish(engine, observer)
    }

    /// Trains the epoch in progress to its end (or the step limit), reports it and checkpoints;
    /// returns whether the run goes on.
    fn run_epoch(
        &mut self,
        engine: &mut dyn Engine,
        observer: &mut dyn RunObserver,
    ) -> Result<bool, TrainError> {
        let finished = self.train_epoch(engine, observer)?;
        observer.validating(self.position.epoch);
        let record = self.close_epoch(engine)?;
        observer.epoch_ended(&record, &*engine);
        if !finished {
            // The step limit ended the epoch early: report it, keep the checkpoint inside the
            // epoch so that a longer limit continues it.
            self.checkpoint(engine, observer)?;
            self.epochs.push(record);
            return Ok(false);
        }
        self.consider_best(&record);
        self.epochs.push(record);
        self.position.epoch += 1;
        self.position.step_in_epoch = 0;
        self.progress = EpochProgress::default();
        self.drop_rate(engine)?;
        self.checkpoint(engine, observer)?;
        Ok(true)
    }

    /// The weights `--select` tests, loaded on the engine's replicas, and the record of the
    /// choice; best-val weights (or, with `--ema`, the last average) are also written as a
    /// weights-only file beside the checkpoint.
    fn selected(
        &mut self,
        engine: &mut dyn Engine,
    ) -> Result<(OptimizerState, SelectionRecord), TrainError> {
        let stopped_early = self.patience_exhausted() && self.position.epoch <= self.cfg.epochs();
        let rule = self.cfg.recipe.select;
        let last = self.epochs.last();
        let mut record = SelectionRecord {
            rule: rule.name().into(),
            epoch: last.map_or(0, |e| e.epoch),
            val_accuracy: last.map_or(0.0, |e| e.val_accuracy),
            stopped_early,
            weights: None,
            lr_drops: self.lr_drops.clone(),
        };
        let (params, extension) = match (rule, &self.best, &self.average) {
            (Selection::BestVal, Some(best), _) => {
                record.epoch = best.epoch;
                record.val_accuracy = best.val_accuracy;
                (&best.params, BEST_WEIGHTS_EXTENSION)
            }
            // The last epoch's figures are the average's already.
            (_, _, Some(average)) => (&average.params, AVERAGE_WEIGHTS_EXTENSION),
            _ => return Ok((self.state.clone(), record)),
        };
        let path = self.checkpoint_path().with_extension(extension);
        self.spec.save(params, &path)?;
        record.weights = Some(path.display().to_string());
        let mut state = self.state.clone();
        state.params.clone_from(params);
        engine.load_state(&state)?;
        Ok((state, record))
    }

    /// The test figures and the results file.
    fn finish(
        &mut self,
        engine: &mut dyn Engine,
        observer: &mut dyn RunObserver,
    ) -> Result<RunResults, TrainError> {
        self.refresh(engine)?;
        let (tested, selection) = self.selected(engine)?;
        let ds = &self.data.dataset;
        let (test, scores) = test_record(
            engine,
            &tested,
            &self.data.test_pairs,
            ds.test.labels(),
            (&self.data.train_pool, ds.train.labels()),
            self.cfg.recipe.test_augment,
        )?;
        self.tested = Some(tested);
        observer.test_scored(&TestScores {
            pairs: &self.data.test_pairs,
            scores: &scores,
            labels: ds.test.labels(),
            record: &test,
        });
        let out = self.cfg.out_path();
        let info = engine.info();
        let mut config = serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = config.as_object_mut() {
            obj.insert("epochs".into(), self.cfg.epochs().into());
            obj.insert("out".into(), out.display().to_string().into());
            let checkpoint = self.checkpoint_path().display().to_string();
            obj.insert("checkpoint".into(), checkpoint.into());
        }
        let mut membership = self.membership.clone();
        membership.extend(engine.membership());
        let results = RunResults {
            dataset: ds.kind.name().to_string(),
            workers: info.workers,
            device: info.device,
            aggregation: info.aggregation,
            config,
            epochs: self.epochs.clone(),
            test,
            timing: engine.timing(),
            parameters: self.state.params.len(),
            membership,
            selection,
        };
        results.write(&out).map_err(|e| TrainError::Io {
            path: out.clone(),
            source: e,
        })?;
        Ok(results)
    }
}
