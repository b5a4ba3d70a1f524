//! The recipe's transformers keys as the loop's settings, read once: steps,
//! schedule, AdamW, clipping, logging, evaluation and checkpoint cadence.

use super::error::StageError;
use crate::recipe::{DataPlan, IntervalStrategy, SchedulerType, StageConfig, TrainingArgs};
use crate::train::accounting::StepRules;
use crate::train::adamw::AdamWConfig;
use crate::train::hooks::SavePolicy;
use crate::train::schedule::{Schedule, ScheduleKind};
use crate::train::trainer::LoopSettings;

/// The loop's settings from the recipe's transformers keys, for `devices`
/// replicas: a step is `gradient_accumulation_steps x devices` micro-batches
/// (transformers' effective batch), so an epoch of `M` micro-batches has
/// `ceil(M / (GA x devices))` steps, which is transformers' per-process
/// `ceil(ceil(M / devices) / GA)`.
pub fn loop_settings(
    stage: &StageConfig,
    rules: StepRules,
    micro_per_epoch: usize,
    devices: usize,
) -> Result<LoopSettings, StageError> {
    let accumulation = stage.training.gradient_accumulation_steps.max(1) * devices.max(1);
    let t = &TrainingArgs {
        gradient_accumulation_steps: accumulation,
        ..stage.training.clone()
    };
    let total_steps = rules.total_steps(t, micro_per_epoch);
    let kind = match t.lr_scheduler_type {
        SchedulerType::Linear => ScheduleKind::Linear,
        SchedulerType::Cosine => ScheduleKind::Cosine,
        SchedulerType::Constant => ScheduleKind::Constant,
        SchedulerType::ConstantWithWarmup => ScheduleKind::ConstantWithWarmup,
    };
    Ok(LoopSettings {
        total_steps,
        accumulation,
        schedule: Schedule {
            kind,
            peak_lr: t.learning_rate,
            warmup_steps: t.warmup_steps_for(total_steps),
            total_steps,
        },
        adamw: AdamWConfig {
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_epsilon,
            weight_decay: t.weight_decay,
        },
        max_grad_norm: t.max_grad_norm,
        logging_steps: t.logging_steps.resolve(total_steps).max(1),
        logging_first_step: t.logging_first_step,
        rules,
        eval_every: (t.eval_strategy == IntervalStrategy::Steps)
            .then(|| t.eval_interval(total_steps)),
        eval_each_epoch: t.eval_strategy == IntervalStrategy::Epoch,
        // The handbook's scripts call `trainer.evaluate()` after training when `do_eval`.
        eval_at_end: t.do_eval,
    })
}

/// Whether the stage evaluates at all, and so needs its test split.
pub(super) fn wants_eval(stage: &StageConfig) -> bool {
    let has_test = match stage.data.plan() {
        Ok(DataPlan::Mixer { test, .. }) => !test.is_empty(),
        Ok(DataPlan::Mixture {
            test_split_size, ..
        }) => test_split_size.is_some_and(|s| s > 0.0),
        Err(_) => false,
    };
    has_test && (stage.training.do_eval || stage.training.eval_strategy != IntervalStrategy::No)
}

/// `save_strategy`, `save_steps` and `save_total_limit`.
pub(super) fn save_policy(stage: &StageConfig, total_steps: usize) -> SavePolicy {
    let t = &stage.training;
    SavePolicy {
        strategy: t.save_strategy,
        every: t.save_steps.resolve(total_steps).max(1),
        total_limit: t.save_total_limit,
    }
}
