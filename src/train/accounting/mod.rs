//! How micro-batches become optimizer steps, and how a step is logged, by
//! the rules of the transformers release the recipe's `compat` names. The
//! training loop (`trainer.rs`) is written once and asks these rules; they
//! are chosen once, in `stage.rs`.
//!
//! | rule | transformers 5 (`trl-1`) | transformers 4.38 + accelerate 0.27 (`trl-0.7`) |
//! |---|---|---|
//! | steps per epoch | `ceil(M / GA)`, a short last step | `max(floor(M / GA), 1)`, leftovers carried into the next epoch's first step |
//! | logged `loss` | mean of the steps' losses | the same, rounded to 4 decimals |
//! | logged `learning_rate` | the rate the step used | the rate of the next step (the scheduler steps before logging) |
//! | logged `epoch` | exact | rounded to 2 decimals |
//! | `num_tokens` | logged | not logged |
//! | forced log | at the last step | none (`logging_first_step`, multiples of `logging_steps`) |
//! | epoch-end events | when an epoch's last micro-batch ends a step | also before a step holding carried micro-batches, and when `max_steps` cuts the last epoch |
//!
//! - [`steps`]: [`StepCursor`], the micro-batches of each step.
//! - [`round`]: Python's `round`.

pub mod round;
pub mod steps;

pub use steps::{CursorPosition, EpochBatches, StepCursor, StepSpan};

use crate::recipe::TrainingArgs;

use super::schedule::Schedule;
use round::python_round;

/// Which release's step accounting and logging the loop follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepRules {
    /// transformers 5 (`compat: trl-1`).
    #[default]
    Transformers5,
    /// transformers 4.38.2 with accelerate 0.27.2 (`compat: trl-0.7`).
    Transformers438,
}

impl StepRules {
    /// Optimizer steps one epoch of `micro_batches` is counted as.
    pub fn steps_per_epoch(self, micro_batches: usize, accumulation: usize) -> usize {
        let accumulation = accumulation.max(1);
        match self {
            StepRules::Transformers5 => micro_batches.div_ceil(accumulation),
            StepRules::Transformers438 => (micro_batches / accumulation).max(1),
        }
    }

    /// Total optimizer steps: `max_steps` when positive, else
    /// `ceil(num_train_epochs × steps per epoch)` (both releases).
    pub fn total_steps(self, training: &TrainingArgs, micro_per_epoch: usize) -> usize {
        if training.max_steps > 0 {
            return training.max_steps as usize;
        }
        let per_epoch =
            self.steps_per_epoch(micro_per_epoch, training.gradient_accumulation_steps) as f64;
        (training.num_train_epochs * per_epoch).ceil() as usize
    }

    /// Whether step `step` (1-based) writes a log line.
    pub fn should_log(
        self,
        step: usize,
        total_steps: usize,
        logging_steps: usize,
        logging_first_step: bool,
    ) -> bool {
        let due = step.is_multiple_of(logging_steps.max(1)) || (logging_first_step && step == 1);
        match self {
            StepRules::Transformers5 => due || step == total_steps,
            StepRules::Transformers438 => due,
        }
    }

    /// The `loss` of a log line from the mean of its steps' losses.
    pub fn logged_loss(self, mean: f64) -> f64 {
        match self {
            StepRules::Transformers5 => mean,
            StepRules::Transformers438 => python_round(mean, 4),
        }
    }

    /// The `learning_rate` of the log line of step `step` (1-based), which
    /// ran at `used`.
    pub fn logged_learning_rate(self, schedule: &Schedule, used: f64, step: usize) -> f64 {
        match self {
            StepRules::Transformers5 => used,
            // `lr_at` is 0-based: step `step + 1` runs at `lr_at(step)`.
            StepRules::Transformers438 => schedule.lr_at(step),
        }
    }

    /// The `epoch` every log line carries.
    pub fn logged_epoch(self, epoch: f64) -> f64 {
        match self {
            StepRules::Transformers5 => epoch,
            StepRules::Transformers438 => python_round(epoch, 2),
        }
    }

    /// Whether TRL's cumulative `num_tokens` is logged.
    pub fn logs_num_tokens(self) -> bool {
        self == StepRules::Transformers5
    }

    /// Whether an epoch that `max_steps` cuts short still has its
    /// end-of-epoch event (transformers 4.38 breaks out of the epoch's loop,
    /// then calls `on_epoch_end`).
    pub fn ends_cut_epoch(self) -> bool {
        self == StepRules::Transformers438
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::ScheduleKind;

    #[test]
    fn legacy_epochs_count_only_full_accumulations() {
        let (modern, legacy) = (StepRules::Transformers5, StepRules::Transformers438);
        assert_eq!(modern.steps_per_epoch(17, 2), 9);
        assert_eq!(legacy.steps_per_epoch(17, 2), 8);
        assert_eq!(legacy.steps_per_epoch(3, 4), 1);
        let args = TrainingArgs {
            gradient_accumulation_steps: 2,
            num_train_epochs: 2.0,
            ..Default::default()
        };
        // The legacy fixture's DPO run: 17 micro-batches per epoch, 16 steps.
        assert_eq!(legacy.total_steps(&args, 17), 16);
        assert_eq!(modern.total_steps(&args, 17), 18);
    }

    /// The legacy fixture's DPO log: `learning_rate` of step k is the rate
    /// of step k + 1; loss and epoch are rounded.
    #[test]
    fn legacy_logs_the_next_rate_and_rounded_values() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-3,
            warmup_steps: 2,
            total_steps: 16,
        };
        let legacy = StepRules::Transformers438;
        assert_eq!(legacy.logged_learning_rate(&schedule, 0.0, 1), 0.0005);
        assert_eq!(legacy.logged_learning_rate(&schedule, 0.0005, 2), 0.001);
        assert_eq!(legacy.logged_learning_rate(&schedule, 0.0, 16), 0.0);
        assert_eq!(legacy.logged_loss(7.495_108_127_593_994), 7.4951);
        assert_eq!(legacy.logged_epoch(2.0 / 17.0), 0.12);
        assert_eq!(StepRules::Transformers5.logged_epoch(0.125), 0.125);
    }

    #[test]
    fn legacy_forces_no_log_at_the_last_step() {
        let legacy = StepRules::Transformers438;
        assert!(legacy.should_log(1, 16, 10, true));
        assert!(!legacy.should_log(1, 16, 10, false));
        assert!(!legacy.should_log(16, 16, 10, true));
        assert!(StepRules::Transformers5.should_log(16, 16, 10, false));
    }
}
