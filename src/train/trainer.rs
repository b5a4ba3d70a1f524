//! The training loop, written once for every objective. It reads like
//! nanoGPT's: set the learning rate, run the micro-batches of the step
//! (each loss scaled for accumulation), clip the global gradient norm, step
//! AdamW, log; evaluate when due.
//!
//! Which micro-batches make a step, and how steps are logged, follow the
//! transformers release of the recipe's `compat` ([`StepRules`]): for
//! transformers 5 an epoch of `M` micro-batches has `ceil(M / accumulation)`
//! optimizer steps, the last of which may have fewer micro-batches; `epoch`
//! is logged as `epoch_index + (last micro-batch + 1) / M`.

use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::accounting::{CursorPosition, StepCursor, StepRules};
use super::adamw::{AdamW, AdamWConfig};
use super::grad_norm::{clip_global_norm, clip_to_norm};
use super::objective::{Metrics, Objective};
use super::parallel::shards::GatheredState;
use super::parallel::{OptimizerShards, Replica};
use super::precision::grads_to_f32;
use super::preference::scalar;
use super::recompute::LayerRecompute;
use super::schedule::Schedule;
use crate::log::{LogEntry, MetricsSink};
use crate::model::gemma::Gemma;

/// The loop's settings, resolved from a recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSettings {
    pub total_steps: usize,
    /// Micro-batches per optimizer step over all devices: the per-device
    /// `gradient_accumulation_steps` times the number of replicas.
    pub accumulation: usize,
    pub schedule: Schedule,
    pub adamw: AdamWConfig,
    /// 0 disables clipping.
    pub max_grad_norm: f64,
    pub logging_steps: usize,
    /// Also log the first step (transformers' `logging_first_step`).
    pub logging_first_step: bool,
    /// Step accounting and logging rules (from `compat`).
    pub rules: StepRules,
    /// Evaluate every this many optimizer steps (`eval_strategy: steps`).
    pub eval_every: Option<usize>,
    /// Evaluate at the end of every epoch (`eval_strategy: epoch`).
    pub eval_each_epoch: bool,
    /// Evaluate once after training (`do_eval` with `eval_strategy: no`).
    pub eval_at_end: bool,
}

/// Training stopped on a number that is not finite.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("step {step}: {what} is {value} (not finite); training stopped")]
    NonFinite {
        step: usize,
        what: &'static str,
        value: f64,
    },
    #[error("the training set has no micro-batches")]
    NoData,
    #[error("writing metrics: {0}")]
    Log(#[from] std::io::Error),
    /// A hook asked the loop to stop (an interrupt, after its checkpoint).
    #[error("{0}")]
    Stopped(String),
    #[error("{0}")]
    Hook(String),
    /// A replica of a data-parallel run failed; `error` is its own message
    /// on the failed replica, `None` on the others (they only saw its flag).
    #[error(
        "device {device} failed in {phase} {step}: {}",
        error.as_deref().unwrap_or("(its error is reported by that device)")
    )]
    DeviceFailed {
        device: String,
        phase: &'static str,
        step: usize,
        error: Option<String>,
    },
    /// burn-collective could not complete an exchange.
    #[error("device {device}: {what} of step {step} failed in burn-collective: {error}")]
    Collective {
        device: String,
        what: &'static str,
        step: usize,
        error: String,
    },
}

impl TrainError {
    /// An error that only follows another replica's failure (that replica
    /// reports the cause).
    pub fn is_secondary(&self) -> bool {
        matches!(
            self,
            TrainError::DeviceFailed { error: None, .. } | TrainError::Collective { .. }
        )
    }
}

/// Where the loop is after some optimizer steps: with the weights and the
/// optimizer state, enough to continue a run exactly as if it never stopped
/// (the data order is a function of the seed and the epoch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: usize,
    /// Where the next step's micro-batches start.
    pub cursor: CursorPosition,
    /// `epoch` as logged for the latest step (transformers' `state.epoch`).
    pub epoch: f64,
    /// The latest step ended an epoch.
    pub epoch_done: bool,
    /// Cumulative non-padding tokens seen (TRL's `num_tokens`).
    pub num_tokens: usize,
    /// Every step's loss, for the final `train_loss`.
    pub step_losses: Vec<f64>,
    /// What has accumulated since the last log line.
    pub window_losses: Vec<f64>,
    pub window_metrics: Vec<Metrics>,
}

/// The optimizer state as a checkpoint reads it.
pub enum OptimizerView<'a, B: burn::tensor::backend::Backend> {
    /// All of it, on this replica.
    Whole(&'a AdamW<B>),
    /// A sharded state gathered onto this replica's host.
    Gathered(&'a GatheredState),
    /// A sharded state that was not gathered: only this replica's share.
    Shard,
}

impl<B: burn::tensor::backend::Backend> Clone for OptimizerView<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: burn::tensor::backend::Backend> Copy for OptimizerView<'_, B> {}

impl<B: burn::tensor::backend::Backend> OptimizerView<'_, B> {
    /// AdamW's step count; `None` for an ungathered shard.
    pub fn step(&self) -> Option<u64> {
        match self {
            OptimizerView::Whole(optimizer) => Some(optimizer.step),
            OptimizerView::Gathered(state) => Some(state.step),
            OptimizerView::Shard => None,
        }
    }

    /// `[exp_avg, exp_avg_sq]` of parameter `id`, flattened fp32.
    pub fn moments(&self, id: ParamId) -> Option<[TensorData; 2]> {
        match self {
            OptimizerView::Whole(optimizer) => optimizer
                .moments
                .get(&id)
                .map(|m| [m.exp_avg.to_data(), m.exp_avg_sq.to_data()]),
            OptimizerView::Gathered(state) => state.moments.get(&id).cloned(),
            OptimizerView::Shard => None,
        }
    }

    /// The fp32 master weight of parameter `id` (bf16 parameters only).
    pub fn master(&self, id: ParamId) -> Option<TensorData> {
        match self {
            OptimizerView::Whole(optimizer) => optimizer.masters.get(&id).map(|m| m.to_data()),
            OptimizerView::Gathered(state) => state.masters.get(&id).cloned(),
            OptimizerView::Shard => None,
        }
    }
}

/// What hooks see after each optimizer step (logging and eval of that step done).
pub struct StepView<'a, A: AutodiffBackend> {
    pub state: &'a LoopState,
    pub model: &'a Gemma<A>,
    pub optimizer: OptimizerView<'a, A::InnerBackend>,
    pub total_steps: usize,
    pub loss: f64,
    /// The step's micro-batch metrics.
    pub metrics: &'a [Metrics],
    /// The step ended an epoch.
    pub epoch_done: bool,
}

/// Called after every optimizer step: progress display, checkpoints,
/// interrupts. An error stops training (`TrainError::Stopped` for a clean stop).
pub trait StepHooks<A: AutodiffBackend> {
    fn after_step(&mut self, view: &StepView<'_, A>) -> Result<(), TrainError>;

    /// Whether `after_step` of this step will read the whole optimizer
    /// state (to write a checkpoint): a sharded state is then gathered
    /// first. Asked once per step, before `after_step`.
    fn wants_optimizer_state(&mut self, _step: usize, _total: usize, _epoch_done: bool) -> bool {
        false
    }
}

/// No hooks.
impl<A: AutodiffBackend> StepHooks<A> for () {
    fn after_step(&mut self, _: &StepView<'_, A>) -> Result<(), TrainError> {
        Ok(())
    }
}

/// Micro-batches of each epoch, in the order the sampler visits them.
pub trait EpochBatches<Batch> {
    fn epoch(&self, index: usize) -> Vec<Batch>;
}

impl<Batch, F: Fn(usize) -> Vec<Batch>> EpochBatches<Batch> for F {
    fn epoch(&self, index: usize) -> Vec<Batch> {
        self(index)
    }
}

/// What the loop leaves behind besides the model.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub train_loss: f64,
    pub steps: usize,
    pub seconds: f64,
}

pub struct Trainer<'a, A: AutodiffBackend, O: Objective<A>> {
    pub settings: LoopSettings,
    pub objective: &'a mut O,
    pub sink: &'a mut dyn MetricsSink,
    pub optimizer: AdamW<A::InnerBackend>,
    /// A fresh state, or a checkpoint's (with its weights and optimizer).
    pub state: LoopState,
    /// This loop's place in a data-parallel run (the only one by default).
    pub replica: Replica,
    /// Metric names of this replica's latest micro-batch (train, eval):
    /// rows from the other replicas arrive as bare numbers.
    metric_names: [Vec<String>; 2],
    /// This replica's share of a sharded optimizer state (set by `fit`).
    shards: Option<OptimizerShards>,
    /// Per-layer gradient checkpointing: the recompute the policy's
    /// forward passes record into (`LayerRecompute::install`).
    pub recompute: Option<Arc<LayerRecompute<A>>>,
}

impl<'a, A: AutodiffBackend, O: Objective<A>> Trainer<'a, A, O> {
    pub fn new(
        settings: LoopSettings,
        objective: &'a mut O,
        sink: &'a mut dyn MetricsSink,
    ) -> Self {
        let optimizer = AdamW::new(settings.adamw);
        Self {
            settings,
            objective,
            sink,
            optimizer,
            state: LoopState::default(),
            replica: Replica::single(),
            metric_names: Default::default(),
            shards: None,
            recompute: None,
        }
    }

    /// Trains `model` for `settings.total_steps` optimizer steps.
    pub fn fit(
        &mut self,
        model: Gemma<A>,
        train: &dyn EpochBatches<O::Batch>,
        eval: &[O::Batch],
    ) -> Result<(Gemma<A>, RunSummary), TrainError> {
        self.fit_with_hooks(model, train, eval, &mut ())
    }

    /// Trains from `self.state` to `settings.total_steps`, calling `hooks`
    /// after every optimizer step.
    pub fn fit_with_hooks(
        &mut self,
        mut model: Gemma<A>,
        train: &dyn EpochBatches<O::Batch>,
        eval: &[O::Batch],
        hooks: &mut dyn StepHooks<A>,
    ) -> Result<(Gemma<A>, RunSummary), TrainError> {
        let started = Instant::now();
        let accumulation = self.settings.accumulation.max(1);
        let rules = self.settings.rules;
        let mut steps = StepCursor::resume(rules, accumulation, train, self.state.cursor)?;
        let total_steps = self.settings.total_steps;
        self.shards = self
            .replica
            .shards_optimizer()
            .then(|| OptimizerShards::partition(&model, self.replica.rank, self.replica.world));
        if let Some(shards) = &self.shards {
            shards.retain(&mut self.optimizer);
        }
        while self.state.step < total_steps {
            let span = steps.next_step()?;
            let (step, epoch) = (self.state.step, self.state.epoch);
            // transformers 4.38: an epoch whose leftovers join this step ended
            // (and evaluated) before it, on the current weights.
            if span.epoch_ended_within {
                self.end_of_epoch(&model, eval, epoch, step)?;
            }
            let lr = self.settings.schedule.lr_at(step);
            let (next, loss, grad_norm, metrics) =
                self.optimizer_step(model, &span.batches, lr, step + 1)?;
            model = next;
            let state = &mut self.state;
            state.step += 1;
            state.cursor = steps.position();
            state.step_losses.push(loss);
            state.window_losses.push(loss);
            state.window_metrics.extend(metrics.iter().cloned());
            state.epoch = rules.logged_epoch(span.epoch);
            state.epoch_done = span.ends_epoch;
            let (step, epoch) = (state.step, state.epoch);
            let s = &self.settings;
            if rules.should_log(step, s.total_steps, s.logging_steps, s.logging_first_step) {
                let logged_lr = rules.logged_learning_rate(&s.schedule, lr, step);
                self.log_window(grad_norm, logged_lr)?;
            }
            let due = self
                .settings
                .eval_every
                .is_some_and(|n| n > 0 && step % n == 0);
            if due && !eval.is_empty() {
                self.evaluate(&model, eval, epoch, step)?;
            }
            if span.ends_epoch {
                self.end_of_epoch(&model, eval, epoch, step)?;
            }
            let gathered = self.gather_for_hooks(&model, hooks, total_steps, span.ends_epoch)?;
            let optimizer = match (&self.shards, &gathered) {
                (None, _) => OptimizerView::Whole(&self.optimizer),
                (Some(_), Some(state)) => OptimizerView::Gathered(state),
                (Some(_), None) => OptimizerView::Shard,
            };
            hooks.after_step(&StepView {
                state: &self.state,
                model: &model,
                optimizer,
                total_steps,
                loss,
                metrics: &metrics,
                epoch_done: span.ends_epoch,
            })?;
        }
        let (step, epoch) = (self.state.step, self.state.epoch);
        if !self.state.epoch_done && rules.ends_cut_epoch() {
            self.end_of_epoch(&model, eval, epoch, step)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let losses = &self.state.step_losses;
        let train_loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let mut summary = LogEntry::new();
        summary.insert("train_runtime".into(), seconds.into());
        summary.insert(
            "train_steps_per_second".into(),
            (step as f64 / seconds).into(),
        );
        summary.insert("train_loss".into(), train_loss.into());
        summary.insert("epoch".into(), epoch.into());
        summary.insert("step".into(), step.into());
        self.sink.record(&summary)?;
        if self.settings.eval_at_end && !eval.is_empty() {
            self.evaluate(&model, eval, epoch, step)?;
        }
        Ok((
            model,
            RunSummary {
                train_loss,
                steps: step,
                seconds,
            },
        ))
    }

    /// One optimizer step over `chunk` (the micro-batches of every
    /// replica): returns the new model, the step loss, the gradient norm
    /// before clipping and each micro-batch's metrics.
    fn optimizer_step(
        &mut self,
        model: Gemma<A>,
        chunk: &[O::Batch],
        lr: f64,
        step: usize,
    ) -> Result<(Gemma<A>, f64, f64, Vec<Metrics>), TrainError> {
        let refs: Vec<&O::Batch> = chunk.iter().collect();
        let normalizer = self.objective.normalizer(&refs);
        // Every replica holds the whole step, so `num_tokens` needs no exchange.
        let tokens: Vec<usize> = chunk
            .iter()
            .map(|batch| {
                self.state.num_tokens += self.objective.tokens(batch);
                self.state.num_tokens
            })
            .collect();
        let device = device_of(&model);
        let (grads, own, width) = match self.shards.clone() {
            None => self.replica_backward(&model, chunk, normalizer, step)?,
            Some(shards) => self.sharded_backward(&model, chunk, normalizer, step, &shards)?,
        };
        let rows =
            self.exchange_rows(&device, "training step", step, chunk.len(), width, own, 0)?;
        let mut loss_sum = 0.0;
        let mut metrics = Vec::with_capacity(chunk.len());
        for ((numerator, mut batch_metrics), tokens) in rows.into_iter().zip(tokens) {
            loss_sum += numerator[0];
            if self.settings.rules.logs_num_tokens() {
                batch_metrics.insert("num_tokens".into(), tokens as f64);
            }
            metrics.push(batch_metrics);
        }
        let loss = loss_sum / normalizer;
        check_finite(step, "loss", loss)?;
        let max_norm = self.settings.max_grad_norm;
        let (grads, grad_norm) = match &self.shards {
            None => {
                let grads = self.replica.sum_gradients(&model, grads, step)?;
                clip_global_norm(&model, grads, max_norm)
            }
            Some(shards) => {
                let norm = shards.global_norm(&self.replica, &device, &model, &grads, step)?;
                (clip_to_norm(&model, grads, max_norm, norm), norm)
            }
        };
        check_finite(step, "grad_norm", grad_norm)?;
        let mut model = self.optimizer.step(lr, model, grads);
        if let Some(shards) = &self.shards {
            model = shards.broadcast_parameters(&self.replica, model, step)?;
        }
        Ok((model, loss, grad_norm, metrics))
    }

    /// The backward of this replica's micro-batches of the step (all of
    /// them on one device), after which the replicas agree that all went
    /// well: the accumulated gradients, this replica's rows and the row width.
    fn replica_backward(
        &mut self,
        model: &Gemma<A>,
        chunk: &[O::Batch],
        normalizer: f64,
        step: usize,
    ) -> Result<(GradientsParams, Vec<Row>, usize), TrainError> {
        let replica = self.replica.clone();
        let local = replica.guard(|| {
            self.inject_failure(step);
            let mut accumulator = GradientsAccumulator::<Gemma<A>>::new();
            let mut rows = Vec::new();
            for (index, batch) in chunk.iter().enumerate() {
                if replica.owns(index) {
                    let (grads, row) = self.micro_batch_backward(model, batch, index, normalizer);
                    // bf16 gradients are accumulated (and reduced, clipped, applied) in fp32.
                    accumulator.accumulate(model, grads_to_f32(model, grads));
                    rows.push(row);
                }
            }
            (accumulator.grads(), rows)
        });
        let status = match &local {
            Ok((_, rows)) => Ok(row_width(rows)),
            Err(error) => Err(error.as_str()),
        };
        let device = device_of(model);
        let width = replica.agree::<A::InnerBackend>(&device, "training step", step, status)?;
        let (grads, rows) = local.map_err(TrainError::Hook)?;
        Ok((grads, rows, width))
    }

    /// The same with a sharded optimizer: the micro-batches go in rounds of
    /// one per replica, and after each round every gradient is summed onto
    /// its owner, which alone accumulates it (`parallel::shards`). Returns
    /// the owned gradients of the whole step.
    fn sharded_backward(
        &mut self,
        model: &Gemma<A>,
        chunk: &[O::Batch],
        normalizer: f64,
        step: usize,
        shards: &OptimizerShards,
    ) -> Result<(GradientsParams, Vec<Row>, usize), TrainError> {
        let replica = self.replica.clone();
        let device = device_of(model);
        let mut accumulator = GradientsAccumulator::<Gemma<A>>::new();
        let (mut rows, mut width) = (Vec::new(), 0);
        for round in 0..chunk.len().div_ceil(replica.world) {
            let index = round * replica.world + replica.rank;
            let local = replica.guard(|| {
                self.inject_failure(step);
                let batch = chunk.get(index)?;
                Some(self.micro_batch_backward(model, batch, index, normalizer))
            });
            let status = match &local {
                Ok(done) => Ok(done.as_ref().map_or(0, |(_, row)| row_len(row))),
                Err(error) => Err(error.as_str()),
            };
            let round_width =
                replica.agree::<A::InnerBackend>(&device, "training step", step, status)?;
            width = width.max(round_width);
            let (grads, row) = local.map_err(TrainError::Hook)?.unzip();
            rows.extend(row);
            let owned = shards.reduce_to_owners(&replica, model, grads, step)?;
            accumulator.accumulate(model, owned);
        }
        Ok((accumulator.grads(), rows, width))
    }

    /// One micro-batch's gradients in the weights' dtype (its loss scaled
    /// by the step's `normalizer`) and its row: index, loss numerator, metrics.
    fn micro_batch_backward(
        &mut self,
        model: &Gemma<A>,
        batch: &O::Batch,
        index: usize,
        normalizer: f64,
    ) -> (GradientsParams, Row) {
        let (loss, batch_metrics) = self.objective.train_loss(model, batch);
        let numerator = scalar(loss.clone().detach().inner());
        let grads = (loss / normalizer).backward();
        let grads = match &self.recompute {
            None => GradientsParams::from_grads(grads, model),
            Some(recompute) => recompute.backward(model, grads),
        };
        (grads, (index, vec![numerator], batch_metrics))
    }

    fn inject_failure(&self, step: usize) {
        if self.replica.fail_at_step == Some(step) {
            panic!("injected failure (test hook)");
        }
    }

    /// With a sharded optimizer, the whole state gathered onto the primary
    /// replica when the hooks will write it this step.
    fn gather_for_hooks(
        &mut self,
        model: &Gemma<A>,
        hooks: &mut dyn StepHooks<A>,
        total_steps: usize,
        epoch_done: bool,
    ) -> Result<Option<GatheredState>, TrainError> {
        let Some(shards) = &self.shards else {
            return Ok(None);
        };
        let step = self.state.step;
        let device = device_of(model);
        let wanted = hooks.wants_optimizer_state(step, total_steps, epoch_done);
        let wanted =
            self.replica
                .any::<A::InnerBackend>(&device, wanted, "optimizer gather", step)?;
        if !wanted {
            return Ok(None);
        }
        shards.gather_state(&self.replica, &device, model, &self.optimizer, step)
    }

    /// Every replica's rows of a step (or an evaluation) in order: the
    /// leading numbers of each row and its metrics, named after this
    /// replica's own (`names`: 0 train, 1 eval).
    #[allow(clippy::too_many_arguments)]
    fn exchange_rows(
        &mut self,
        device: &burn::tensor::Device<A::InnerBackend>,
        phase: &'static str,
        step: usize,
        count: usize,
        width: usize,
        own: Vec<Row>,
        names: usize,
    ) -> Result<Vec<(Vec<f64>, Metrics)>, TrainError> {
        let lead = own.first().map_or(0, |(_, numbers, _)| numbers.len());
        if let Some((_, _, metrics)) = own.first() {
            self.metric_names[names] = metrics.keys().cloned().collect();
        }
        let local = own
            .into_iter()
            .map(|(index, mut numbers, metrics)| {
                numbers.extend(metrics.into_values());
                (index, numbers)
            })
            .collect();
        let rows = self
            .replica
            .gather_rows::<A::InnerBackend>(device, phase, step, count, width, local)?;
        let lead = if lead > 0 {
            lead
        } else {
            width.saturating_sub(self.metric_names[names].len())
        };
        Ok(rows
            .into_iter()
            .map(|row| {
                let (numbers, values) = row.split_at(lead.min(row.len()));
                let metrics = self.metric_names[names]
                    .iter()
                    .cloned()
                    .zip(values.iter().copied())
                    .collect();
                (numbers.to_vec(), metrics)
            })
            .collect())
    }

    /// Logs the mean loss and metrics of the steps since the last log line.
    fn log_window(&mut self, grad_norm: f64, lr: f64) -> Result<(), TrainError> {
        let state = &mut self.state;
        let losses = std::mem::take(&mut state.window_losses);
        let metrics = std::mem::take(&mut state.window_metrics);
        let mut entry = LogEntry::new();
        let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let loss = self.settings.rules.logged_loss(loss);
        entry.insert("loss".into(), loss.into());
        entry.insert("grad_norm".into(), grad_norm.into());
        entry.insert("learning_rate".into(), lr.into());
        for (key, value) in mean_metrics(&metrics) {
            entry.insert(key, value.into());
        }
        entry.insert("epoch".into(), state.epoch.into());
        entry.insert("step".into(), state.step.into());
        self.sink.record(&entry)?;
        Ok(())
    }

    /// An epoch ended: evaluate if the strategy is `epoch`.
    fn end_of_epoch(
        &mut self,
        model: &Gemma<A>,
        eval: &[O::Batch],
        epoch: f64,
        step: usize,
    ) -> Result<(), TrainError> {
        if self.settings.eval_each_epoch && !eval.is_empty() {
            self.evaluate(model, eval, epoch, step)?;
        }
        Ok(())
    }

    /// Runs the objective over `eval` without a graph and logs `eval_*`
    /// means; with several replicas each evaluates its share of the batches
    /// and the means are over all of them.
    pub fn evaluate(
        &mut self,
        model: &Gemma<A>,
        eval: &[O::Batch],
        epoch: f64,
        step: usize,
    ) -> Result<LogEntry, TrainError> {
        let replica = self.replica.clone();
        let local = replica.guard(|| self.own_eval(model, eval));
        let status = match &local {
            Ok(rows) => Ok(row_width(rows)),
            Err(error) => Err(error.as_str()),
        };
        let device = device_of(model);
        let width =
            replica.agree::<A::InnerBackend>(&device, "evaluation after step", step, status)?;
        let own = local.map_err(TrainError::Hook)?;
        let rows = self.exchange_rows(
            &device,
            "evaluation after step",
            step,
            eval.len(),
            width,
            own,
            1,
        )?;
        let (mut loss_sum, mut examples) = (0.0, 0);
        let mut metrics = Vec::with_capacity(eval.len());
        for (numbers, mut batch_metrics) in rows {
            // TRL counts `num_tokens` in training only; eval reports the running total.
            if self.settings.rules.logs_num_tokens() {
                batch_metrics.insert("num_tokens".into(), self.state.num_tokens as f64);
            }
            let (loss, n) = (numbers[0], numbers[1] as usize);
            loss_sum += loss * n as f64;
            examples += n;
            metrics.push(batch_metrics);
        }
        let mut entry = LogEntry::new();
        // transformers repeats each batch's loss once per example, then averages.
        let loss = loss_sum / examples.max(1) as f64;
        entry.insert("eval_loss".into(), loss.into());
        for (key, value) in mean_metrics(&metrics) {
            entry.insert(format!("eval_{key}"), value.into());
        }
        entry.insert("epoch".into(), epoch.into());
        entry.insert("step".into(), step.into());
        self.sink.record(&entry)?;
        Ok(entry)
    }

    /// This replica's evaluation batches: index, `[loss, examples]`, metrics.
    fn own_eval(&mut self, model: &Gemma<A>, eval: &[O::Batch]) -> Vec<Row> {
        let policy = model.valid();
        let mut rows = Vec::new();
        for (index, batch) in eval.iter().enumerate() {
            if !self.replica.owns(index) {
                continue;
            }
            let (loss, batch_metrics) = self.objective.eval_loss(&policy, batch);
            let n = self.objective.examples(batch);
            rows.push((index, vec![loss, n as f64], batch_metrics));
        }
        rows
    }
}

/// A micro-batch's (or an eval batch's) index in the step, leading numbers
/// (the loss numerator, ...) and metrics.
type Row = (usize, Vec<f64>, Metrics);

/// Numbers per row of the rows exchange (leading values and metrics); 0
/// for a replica with no micro-batch in this step.
fn row_width(rows: &[Row]) -> usize {
    rows.first().map_or(0, row_len)
}

fn row_len((_, numbers, metrics): &Row) -> usize {
    numbers.len() + metrics.len()
}

/// The device of a model's parameters (on the inner backend).
fn device_of<A: AutodiffBackend>(model: &Gemma<A>) -> burn::tensor::Device<A::InnerBackend> {
    use burn::module::Module;
    model
        .devices()
        .into_iter()
        .next()
        .expect("a model has parameters")
}

/// Unweighted mean of each metric over micro-batches, except `num_tokens`,
/// which is cumulative: its latest value.
fn mean_metrics(all: &[Metrics]) -> Vec<(String, f64)> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    first
        .keys()
        .map(|key| {
            let value = if key == "num_tokens" {
                all.last().and_then(|m| m.get(key)).copied().unwrap_or(0.0)
            } else {
                all.iter().filter_map(|m| m.get(key)).sum::<f64>() / all.len() as f64
            };
            (key.clone(), value)
        })
        .collect()
}

fn check_finite(step: usize, what: &'static str, value: f64) -> Result<(), TrainError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(TrainError::NonFinite { step, what, value })
    }
}
