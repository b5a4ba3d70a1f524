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

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::TrainBackend;
use super::accounting::{CursorPosition, EpochBatches, StepCursor, StepRules};
use super::adamw::{AdamW, AdamWConfig};
use super::error::TrainError;
use super::grad_norm::clip_to_norm;
use super::objective::{Metrics, Objective};
use super::parallel::{
    GradientExchange, MicroBatch, OptimizerView, Replica, Row, StepGradients, exchange_for,
};
use super::preference::scalar;
use super::recompute::LayerRecompute;
use super::schedule::Schedule;
use crate::log::{LogEntry, MetricsSink};
use crate::model::gemma::{EachLayer, Gemma, LayerRunner};

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
    /// Where this loop meets the other replicas of a data-parallel run
    /// (one device by default: every exchange a no-op).
    pub exchange: Box<dyn GradientExchange<A>>,
    /// Per-layer gradient checkpointing: the recompute the policy's
    /// forward passes run their layers through and record into.
    pub recompute: Option<Arc<LayerRecompute<A>>>,
}

/// One optimizer step done.
struct StepOutcome<A: AutodiffBackend> {
    model: Gemma<A>,
    loss: f64,
    /// Before clipping.
    grad_norm: f64,
    /// Each micro-batch's metrics, in step order.
    metrics: Vec<Metrics>,
}

impl<'a, A: TrainBackend, O: Objective<A>> Trainer<'a, A, O> {
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
            exchange: exchange_for(&Replica::single()),
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
        let rules = self.settings.rules;
        let accumulation = self.settings.accumulation.max(1);
        let mut steps = StepCursor::resume(rules, accumulation, train, self.state.cursor)?;
        let total_steps = self.settings.total_steps;
        self.exchange.start(&model, &mut self.optimizer);
        while self.state.step < total_steps {
            let span = steps.next_step()?;
            // transformers 4.38: an epoch whose leftovers join this step ended
            // (and evaluated) before it, on the current weights.
            if span.epoch_ended_within {
                self.end_of_epoch(&model, eval)?;
            }
            let lr = self.settings.schedule.lr_at(self.state.step);
            let done = self.optimizer_step(model, &span.batches, lr, self.state.step + 1)?;
            model = done.model;
            self.record_step(done.loss, &done.metrics, steps.position(), &span);
            let step = self.state.step;
            let s = &self.settings;
            let eval_due = s
                .eval_every
                .is_some_and(|n| n > 0 && step.is_multiple_of(n));
            if rules.should_log(step, s.total_steps, s.logging_steps, s.logging_first_step) {
                let logged_lr = rules.logged_learning_rate(&s.schedule, lr, step);
                self.log_window(done.grad_norm, logged_lr)?;
            }
            if eval_due && !eval.is_empty() {
                self.evaluate(&model, eval, self.state.epoch, step)?;
            }
            if span.ends_epoch {
                self.end_of_epoch(&model, eval)?;
            }
            let wanted = hooks.wants_optimizer_state(step, total_steps, span.ends_epoch);
            let optimizer = self
                .exchange
                .optimizer_view(&model, &self.optimizer, wanted, step)?;
            hooks.after_step(&StepView {
                state: &self.state,
                model: &model,
                optimizer,
                total_steps,
                loss: done.loss,
                metrics: &done.metrics,
                epoch_done: span.ends_epoch,
            })?;
        }
        if !self.state.epoch_done && rules.ends_cut_epoch() {
            self.end_of_epoch(&model, eval)?;
        }
        let summary = self.log_summary(started.elapsed().as_secs_f64())?;
        if self.settings.eval_at_end && !eval.is_empty() {
            self.evaluate(&model, eval, self.state.epoch, self.state.step)?;
        }
        Ok((model, summary))
    }

    /// One optimizer step over `batches` (the micro-batches of every
    /// replica): forward and backward of each, the exchange, clipping, AdamW.
    fn optimizer_step(
        &mut self,
        model: Gemma<A>,
        batches: &[O::Batch],
        lr: f64,
        step: usize,
    ) -> Result<StepOutcome<A>, TrainError> {
        let refs: Vec<&O::Batch> = batches.iter().collect();
        let normalizer = self.objective.normalizer(&refs);
        let tokens = self.count_tokens(batches);
        let (objective, recompute) = (&mut *self.objective, self.recompute.as_deref());
        let mut backward = |index: usize| {
            let batch = &batches[index];
            micro_batch_backward(objective, recompute, &model, batch, index, normalizer)
        };
        let StepGradients { grads, rows } =
            self.exchange
                .backward(&model, step, batches.len(), &mut backward)?;
        let loss = rows.iter().map(|row| row.numbers[0]).sum::<f64>() / normalizer;
        TrainError::check_finite(step, "loss", loss)?;
        let grad_norm = self.exchange.global_norm(&model, &grads, step)?;
        TrainError::check_finite(step, "grad_norm", grad_norm)?;
        let grads = clip_to_norm(&model, grads, self.settings.max_grad_norm, grad_norm);
        let model = self.optimizer.step(lr, model, grads);
        let model = self.exchange.share_update(model, step)?;
        let logs_tokens = self.settings.rules.logs_num_tokens();
        let metrics = rows
            .into_iter()
            .zip(tokens)
            .map(|(row, tokens)| {
                let mut metrics = row.metrics;
                if logs_tokens {
                    metrics.insert("num_tokens".into(), tokens as f64);
                }
                metrics
            })
            .collect();
        Ok(StepOutcome {
            model,
            loss,
            grad_norm,
            metrics,
        })
    }

    /// The cumulative `num_tokens` after each micro-batch of the step
    /// (every replica holds the whole step, so this needs no exchange).
    fn count_tokens(&mut self, batches: &[O::Batch]) -> Vec<usize> {
        batches
            .iter()
            .map(|batch| {
                self.state.num_tokens += self.objective.tokens(batch);
                self.state.num_tokens
            })
            .collect()
    }

    /// The loop's state after a step of `span` with this loss and metrics.
    fn record_step(
        &mut self,
        loss: f64,
        metrics: &[Metrics],
        cursor: CursorPosition,
        span: &super::accounting::StepSpan<O::Batch>,
    ) {
        let state = &mut self.state;
        state.step += 1;
        state.cursor = cursor;
        state.step_losses.push(loss);
        state.window_losses.push(loss);
        state.window_metrics.extend(metrics.iter().cloned());
        state.epoch = self.settings.rules.logged_epoch(span.epoch);
        state.epoch_done = span.ends_epoch;
    }

    /// The end-of-training line (`train_loss`, runtime) and the summary.
    fn log_summary(&mut self, seconds: f64) -> Result<RunSummary, TrainError> {
        let (step, epoch) = (self.state.step, self.state.epoch);
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
        Ok(RunSummary {
            train_loss,
            steps: step,
            seconds,
        })
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
    fn end_of_epoch(&mut self, model: &Gemma<A>, eval: &[O::Batch]) -> Result<(), TrainError> {
        if self.settings.eval_each_epoch && !eval.is_empty() {
            self.evaluate(model, eval, self.state.epoch, self.state.step)?;
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
        let policy = model.valid();
        let objective = &mut *self.objective;
        let mut evaluate = |index: usize| {
            let batch = &eval[index];
            let (loss, metrics) = objective.eval_loss(&policy, batch);
            let examples = objective.examples(batch) as f64;
            Row {
                index,
                numbers: vec![loss, examples],
                metrics,
            }
        };
        let rows = self
            .exchange
            .evaluate(model, step, eval.len(), &mut evaluate)?;
        let (mut loss_sum, mut examples) = (0.0, 0);
        let mut metrics = Vec::with_capacity(eval.len());
        for Row {
            numbers,
            metrics: mut batch_metrics,
            ..
        } in rows
        {
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
}

/// One micro-batch's gradients in the weights' dtype (its loss scaled by
/// the step's `normalizer`) and its row: index, loss numerator, metrics.
fn micro_batch_backward<A: TrainBackend, O: Objective<A>>(
    objective: &mut O,
    recompute: Option<&LayerRecompute<A>>,
    model: &Gemma<A>,
    batch: &O::Batch,
    index: usize,
    normalizer: f64,
) -> MicroBatch {
    let layers: &dyn LayerRunner<A> = match recompute {
        Some(recompute) => recompute,
        None => &EachLayer,
    };
    let (loss, metrics) = objective.train_loss(model, layers, batch);
    let numerator = scalar(loss.clone().detach().inner());
    let grads = (loss / normalizer).backward();
    let grads = match recompute {
        None => GradientsParams::from_grads(grads, model),
        Some(recompute) => recompute.backward(model, grads),
    };
    MicroBatch {
        grads,
        row: Row {
            index,
            numbers: vec![numerator],
            metrics,
        },
    }
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
