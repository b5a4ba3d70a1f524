//! Step accounting of a plan: micro-batches per device and epoch, optimizer
//! steps, warmup, effective batch size, by the same rules the trainer uses
//! (`StepRules` of the recipe's `compat`, `TrainingArgs::warmup_steps_for`).

use serde::Serialize;

use crate::recipe::{Compat, TrainingArgs};
use crate::train::compat::CompatRules;

/// What the step counts are made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainCount {
    pub count: u64,
    /// `examples` (after TRL's preparation) or `rows` (before it).
    pub unit: &'static str,
}

/// The optimizer steps of one stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepPlan {
    pub per_device_train_batch_size: u64,
    pub gradient_accumulation_steps: u64,
    pub devices: u64,
    /// per device × accumulation × devices.
    pub effective_batch_size: u64,
    pub counted_from: Option<TrainCount>,
    /// On each device (the data-parallel sampler splits batches evenly).
    pub micro_batches_per_epoch: Option<u64>,
    pub steps_per_epoch: Option<u64>,
    pub total_optimizer_steps: Option<u64>,
    pub warmup_steps: Option<u64>,
    pub note: Option<String>,
}

/// Steps of a stage with `training` keys under `compat` on `devices`,
/// from `count` train examples (or rows) when known.
pub fn plan_steps(
    training: &TrainingArgs,
    compat: Compat,
    devices: u64,
    count: Option<TrainCount>,
) -> StepPlan {
    let batch = training.per_device_train_batch_size as u64;
    let accumulation = training.gradient_accumulation_steps as u64;
    let rules = CompatRules::for_compat(compat).steps;
    let micro = count
        .as_ref()
        .map(|c| micro_batches_per_device(c.count, batch, devices, training.dataloader_drop_last));
    let steps_per_epoch =
        micro.map(|m| rules.steps_per_epoch(m as usize, accumulation as usize) as u64);
    let total = match micro {
        Some(m) => Some(rules.total_steps(training, m as usize) as u64),
        None if training.max_steps > 0 => Some(training.max_steps as u64),
        None => None,
    };
    StepPlan {
        per_device_train_batch_size: batch,
        gradient_accumulation_steps: accumulation,
        devices,
        effective_batch_size: batch * accumulation * devices,
        counted_from: count,
        micro_batches_per_epoch: micro,
        steps_per_epoch,
        total_optimizer_steps: total,
        warmup_steps: total.map(|t| training.warmup_steps_for(t as usize) as u64),
        note: None,
    }
}

/// accelerate's even split: the dataloader's `ceil(count / batch)` batches
/// (or `floor` with `dataloader_drop_last`) dealt round-robin to the
/// devices, each getting `ceil(batches / devices)` (handbook: 6750 rows,
/// batch 2, 8 GPUs: 422).
fn micro_batches_per_device(count: u64, batch: u64, devices: u64, drop_last: bool) -> u64 {
    let (batch, devices) = (batch.max(1), devices.max(1));
    match drop_last {
        true => count / (batch * devices),
        false => count.div_ceil(batch).div_ceil(devices),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zephyr-7b-gemma DPO run: 6750 pairs, 8 GPUs × 2 × accumulation 8,
    /// 2 epochs: 104 steps under transformers 4.38 (research notes).
    #[test]
    fn the_handbook_dpo_run_has_104_steps() {
        let training = TrainingArgs {
            per_device_train_batch_size: 2,
            gradient_accumulation_steps: 8,
            num_train_epochs: 2.0,
            warmup_ratio: 0.1,
            ..Default::default()
        };
        let count = TrainCount {
            count: 6750,
            unit: "rows",
        };
        let plan = plan_steps(&training, Compat::Trl07, 8, Some(count));
        assert_eq!(plan.micro_batches_per_epoch, Some(422));
        assert_eq!(plan.steps_per_epoch, Some(52));
        assert_eq!(plan.total_optimizer_steps, Some(104));
        assert_eq!(plan.warmup_steps, Some(11));
        assert_eq!(plan.effective_batch_size, 128);
    }

    #[test]
    fn max_steps_needs_no_data() {
        let training = TrainingArgs {
            max_steps: 30,
            ..Default::default()
        };
        let plan = plan_steps(&training, Compat::Trl1, 1, None);
        assert_eq!(plan.total_optimizer_steps, Some(30));
        assert_eq!(plan.steps_per_epoch, None);
    }
}
