//! Learning-rate schedules of transformers (`get_scheduler`), as a pure
//! function of the optimizer step. Warmup starts from exactly 0: the first
//! optimizer step (index 0) runs at lr 0, as transformers' `LambdaLR` does.

use std::f64::consts::PI;

/// `lr_scheduler_type` values supported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScheduleKind {
    Linear,
    Cosine,
    Constant,
    ConstantWithWarmup,
    /// Cosine decay to `min_lr_rate × lr` instead of 0.
    CosineWithMinLr {
        min_lr_rate: f64,
    },
}

impl ScheduleKind {
    /// Parses a transformers scheduler name; `min_lr_rate` comes from
    /// `lr_scheduler_kwargs` (`min_lr` / `min_lr_rate`) for `cosine_with_min_lr`.
    pub fn parse(name: &str, min_lr_rate: Option<f64>) -> Result<Self, String> {
        match name {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "constant" => Ok(Self::Constant),
            "constant_with_warmup" => Ok(Self::ConstantWithWarmup),
            "cosine_with_min_lr" => match min_lr_rate {
                Some(rate) => Ok(Self::CosineWithMinLr { min_lr_rate: rate }),
                None => {
                    Err("cosine_with_min_lr needs lr_scheduler_kwargs.min_lr or min_lr_rate".into())
                }
            },
            other => Err(format!(
                "unsupported lr_scheduler_type {other:?} (linear, cosine, constant, constant_with_warmup, cosine_with_min_lr)"
            )),
        }
    }
}

/// A resolved schedule: peak rate, warmup and total optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        self.peak_lr * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < warmup && !matches!(self.kind, ScheduleKind::Constant) {
            return step / warmup.max(1.0);
        }
        let progress = (step - warmup) / (total - warmup).max(1.0);
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::ConstantWithWarmup => 1.0,
            ScheduleKind::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            ScheduleKind::Cosine => cosine(progress),
            ScheduleKind::CosineWithMinLr { min_lr_rate } => {
                cosine(progress) * (1.0 - min_lr_rate) + min_lr_rate
            }
        }
    }
}

/// Half a cosine period from 1 to 0 (transformers' `num_cycles = 0.5`).
fn cosine(progress: f64) -> f64 {
    (0.5 * (1.0 + (PI * progress).cos())).max(0.0)
}

/// transformers' rule: `warmup_steps` if positive, else `ceil(warmup_ratio × total)`.
pub fn warmup_steps(warmup_steps: usize, warmup_ratio: f64, total_steps: usize) -> usize {
    if warmup_steps > 0 {
        warmup_steps
    } else {
        (warmup_ratio * total_steps as f64).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture's DPO run: lr 1e-3, cosine, 16 steps, ceil(0.1 × 16) = 2 warmup
    /// steps; `learning_rate` of steps 1..=4 in expected/dpo_train_log.jsonl.
    #[test]
    fn cosine_with_warmup_matches_the_fixture_log() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-3,
            warmup_steps: warmup_steps(0, 0.1, 16),
            total_steps: 16,
        };
        assert_eq!(schedule.warmup_steps, 2);
        assert_eq!(schedule.lr_at(0), 0.0);
        assert_eq!(schedule.lr_at(1), 0.0005);
        assert_eq!(schedule.lr_at(2), 0.001);
        // 0.5·(1 + cos(π/14)) · 1e-3
        assert_eq!(schedule.lr_at(3), 0.000_987_463_956_090_911_8);
        assert_eq!(schedule.lr_at(4), 0.000_950_484_433_951_209_5);
        assert!(schedule.lr_at(15) > 0.0 && schedule.lr_at(16) == 0.0);
    }

    #[test]
    fn linear_and_constant_shapes() {
        let linear = Schedule {
            kind: ScheduleKind::Linear,
            peak_lr: 1.0,
            warmup_steps: 2,
            total_steps: 10,
        };
        assert_eq!(
            [linear.lr_at(0), linear.lr_at(1), linear.lr_at(2)],
            [0.0, 0.5, 1.0]
        );
        assert_eq!(linear.lr_at(6), 0.5);
        let constant = Schedule {
            kind: ScheduleKind::Constant,
            ..linear
        };
        assert_eq!(constant.lr_at(0), 1.0);
        let min_lr = Schedule {
            kind: ScheduleKind::CosineWithMinLr { min_lr_rate: 0.1 },
            ..linear
        };
        assert!((min_lr.lr_at(10) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn unknown_scheduler_is_named() {
        let err = ScheduleKind::parse("cosine_restarts", None).unwrap_err();
        assert!(err.contains("cosine_restarts"));
    }
}
