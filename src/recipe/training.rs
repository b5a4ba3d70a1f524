//! transformers' `TrainingArguments`: the keys both stages share, with
//! transformers' defaults (AdamW eps 1e-8 and weight decay 0, not burn's).

use serde::{Deserialize, Serialize};

use super::values::{
    IntervalStrategy, Optimizer, ReportTo, SamplingStrategy, SaveStrategy, SchedulerType,
    StepsOrRatio,
};

/// The optimisation, schedule, logging, evaluation and checkpoint keys.
///
/// Defaults are transformers 5's `TrainingArguments` defaults; the TRL
/// config classes change a few of them per stage (`learning_rate`,
/// `logging_steps`, `gradient_checkpointing`), which `stage.rs` applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingArgs {
    pub output_dir: String,
    pub overwrite_output_dir: bool,
    pub do_train: bool,
    pub do_eval: bool,
    pub resume_from_checkpoint: Option<String>,
    pub seed: u64,
    pub data_seed: Option<u64>,

    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f64,
    /// `-1` (the default) means: derived from `num_train_epochs`.
    pub max_steps: i64,
    pub train_sampling_strategy: SamplingStrategy,
    pub dataloader_drop_last: bool,

    pub optim: Optimizer,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub lr_scheduler_type: SchedulerType,
    /// Fraction of the total steps spent warming up (deprecated in
    /// transformers 5 in favour of a fractional `warmup_steps`).
    pub warmup_ratio: f64,
    /// A count of steps, or below 1 a fraction of the total (transformers 5).
    pub warmup_steps: f64,

    /// `None`: the backend decides (bf16 on CUDA, fp32 on CPU).
    pub bf16: Option<bool>,
    pub gradient_checkpointing: bool,
    pub gradient_checkpointing_kwargs: Option<serde_yaml_ng::Value>,

    pub logging_strategy: IntervalStrategy,
    pub logging_steps: StepsOrRatio,
    pub logging_first_step: bool,
    /// Evaluate once before the first step (transformers' `eval_on_start`).
    pub eval_on_start: bool,
    pub logging_dir: Option<String>,
    pub log_level: Option<String>,
    pub report_to: ReportTo,
    pub run_name: Option<String>,

    /// Also read from the pre-2024.07 spelling `evaluation_strategy`.
    pub eval_strategy: IntervalStrategy,
    /// `None`: `logging_steps`, as transformers.
    pub eval_steps: Option<StepsOrRatio>,

    pub save_strategy: SaveStrategy,
    pub save_steps: StepsOrRatio,
    pub save_total_limit: Option<usize>,
    pub save_only_model: bool,
    pub remove_unused_columns: Option<bool>,
}

impl Default for TrainingArgs {
    fn default() -> Self {
        TrainingArgs {
            output_dir: "trainer_output".into(),
            overwrite_output_dir: false,
            do_train: true,
            do_eval: false,
            resume_from_checkpoint: None,
            seed: 42,
            data_seed: None,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_train_epochs: 3.0,
            max_steps: -1,
            train_sampling_strategy: SamplingStrategy::Random,
            dataloader_drop_last: false,
            optim: Optimizer::AdamwTorch,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            lr_scheduler_type: SchedulerType::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0.0,
            bf16: None,
            gradient_checkpointing: false,
            gradient_checkpointing_kwargs: None,
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: StepsOrRatio(500.0),
            logging_first_step: false,
            eval_on_start: false,
            logging_dir: None,
            log_level: None,
            report_to: ReportTo::default(),
            run_name: None,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            save_strategy: SaveStrategy::Steps,
            save_steps: StepsOrRatio(500.0),
            save_total_limit: None,
            save_only_model: false,
            remove_unused_columns: None,
        }
    }
}

impl TrainingArgs {
    /// Number of warmup steps for a run of `total_steps` optimizer steps.
    ///
    /// transformers 5 `TrainingArguments.get_warmup_steps`: an integer
    /// `warmup_steps` >= 1 is a count; a value in (0, 1) is a ratio, rounded
    /// up; otherwise `warmup_ratio` applies, rounded up the same way
    /// (ceil(0.1 * 16) = 2 in the tiny-gemma fixture).
    pub fn warmup_steps_for(&self, total_steps: usize) -> usize {
        let ratio_steps = |ratio: f64| (ratio * total_steps as f64).ceil() as usize;
        if self.warmup_steps >= 1.0 {
            self.warmup_steps as usize
        } else if self.warmup_steps > 0.0 {
            ratio_steps(self.warmup_steps)
        } else {
            ratio_steps(self.warmup_ratio)
        }
    }

    /// Optimizer steps in one epoch of `micro_batches` micro-batches.
    ///
    /// transformers 5 counts a trailing partial accumulation as a step:
    /// `len // accum + int(len % accum > 0)`.
    pub fn steps_per_epoch(&self, micro_batches: usize) -> usize {
        let accum = self.gradient_accumulation_steps.max(1);
        micro_batches.div_ceil(accum)
    }

    /// Total optimizer steps: `max_steps` when positive, else
    /// `ceil(num_train_epochs * steps_per_epoch)` (transformers 5).
    pub fn total_steps(&self, micro_batches_per_epoch: usize) -> usize {
        if self.max_steps > 0 {
            return self.max_steps as usize;
        }
        let per_epoch = self.steps_per_epoch(micro_batches_per_epoch) as f64;
        (self.num_train_epochs * per_epoch).ceil() as usize
    }

    /// Evaluation interval in steps (`eval_steps`, else `logging_steps`).
    pub fn eval_interval(&self, total_steps: usize) -> usize {
        self.eval_steps
            .unwrap_or(self.logging_steps)
            .resolve(total_steps)
            .max(1)
    }

    /// Checks that transformers would also reject.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err((
                "warmup_ratio",
                format!("must be in [0, 1], got {}", self.warmup_ratio),
            ));
        }
        if self.warmup_steps < 0.0 || (self.warmup_steps >= 1.0 && self.warmup_steps.fract() != 0.0)
        {
            return Err((
                "warmup_steps",
                format!(
                    "must be a step count or a ratio in [0, 1), got {}",
                    self.warmup_steps
                ),
            ));
        }
        if self.learning_rate < 0.0 || !self.learning_rate.is_finite() {
            return Err((
                "learning_rate",
                format!("must be >= 0, got {}", self.learning_rate),
            ));
        }
        if self.num_train_epochs <= 0.0 && self.max_steps <= 0 {
            return Err((
                "num_train_epochs",
                "must be > 0 when max_steps is not set".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_ratio_rounds_up_like_transformers() {
        let args = TrainingArgs {
            warmup_ratio: 0.1,
            ..Default::default()
        };
        assert_eq!(args.warmup_steps_for(16), 2);
        assert_eq!(args.warmup_steps_for(8), 1);
        assert_eq!(args.warmup_steps_for(104), 11);
    }

    #[test]
    fn fractional_warmup_steps_is_a_ratio_and_integer_is_a_count() {
        let ratio = TrainingArgs {
            warmup_steps: 0.1,
            ..Default::default()
        };
        assert_eq!(ratio.warmup_steps_for(16), 2);
        let count = TrainingArgs {
            warmup_steps: 5.0,
            warmup_ratio: 0.5,
            ..Default::default()
        };
        assert_eq!(count.warmup_steps_for(16), 5);
    }

    #[test]
    fn partial_accumulation_counts_as_a_step() {
        let args = TrainingArgs {
            gradient_accumulation_steps: 2,
            num_train_epochs: 2.0,
            ..Default::default()
        };
        assert_eq!(args.steps_per_epoch(16), 8);
        assert_eq!(args.steps_per_epoch(17), 9);
        assert_eq!(args.total_steps(16), 16);
    }
}
