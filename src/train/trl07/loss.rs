//! The DPO losses of TRL 0.7.10 (`DPOTrainer.dpo_loss`), as pure tensor
//! functions of the summed completion log-probs of each pair.
//!
//! Where they differ from TRL 1.16's (`train::dpo`):
//! * `sigmoid` reads `label_smoothing` ("conservative DPO"):
//!   `−(1−ε)·log σ(β·x) − ε·log σ(−β·x)` with `x` = policy − reference
//!   log-ratio gap; TRL 1.16's `sigmoid` ignores ε.
//! * `ipo` uses the summed log-probs as they are; TRL 1.16 divides them by
//!   the completion lengths first.
//!
//! TRL 0.7.10's fourth type, `kto_pair`, is not implemented.
//!
//! The loss of a micro-batch is the mean of the per-pair losses; the logged
//! rewards are `β · (policy − reference)`, detached.

use std::fmt;
use std::str::FromStr;

use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::backend::Backend;

use crate::train::dpo::{DpoOutput, PairLogps};

/// TRL 0.7.10's `loss_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trl07LossKind {
    Sigmoid,
    Hinge,
    Ipo,
}

impl FromStr for Trl07LossKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "sigmoid" => Ok(Self::Sigmoid),
            "hinge" => Ok(Self::Hinge),
            "ipo" => Ok(Self::Ipo),
            "kto_pair" => Err("kto_pair (TRL 0.7.10) is not implemented".into()),
            other => Err(format!(
                "{other:?} is not a TRL 0.7.10 loss type (sigmoid, hinge, ipo)"
            )),
        }
    }
}

impl fmt::Display for Trl07LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sigmoid => "sigmoid",
            Self::Hinge => "hinge",
            Self::Ipo => "ipo",
        })
    }
}

/// One TRL 0.7.10 loss with its scalars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trl07Loss {
    pub kind: Trl07LossKind,
    pub beta: f64,
    /// Read by `sigmoid` only.
    pub label_smoothing: f64,
}

impl Trl07Loss {
    /// From a recipe's `loss_type` list: TRL 0.7.10 takes exactly one name.
    pub fn from_names(names: &[String], beta: f64, label_smoothing: f64) -> Result<Self, String> {
        let [name] = names else {
            return Err(format!(
                "TRL 0.7.10 takes one loss type, got {}",
                names.join(", ")
            ));
        };
        Ok(Self {
            kind: name.parse()?,
            beta,
            label_smoothing,
        })
    }

    /// The micro-batch loss (shape `[1]`) and the detached rewards.
    pub fn compute<B: Backend>(&self, logps: &PairLogps<B>) -> DpoOutput<B> {
        let chosen = logps.policy_chosen.clone() - logps.ref_chosen.clone();
        let rejected = logps.policy_rejected.clone() - logps.ref_rejected.clone();
        let beta = self.beta;
        let per_pair = match self.kind {
            Trl07LossKind::Sigmoid => {
                let x = (chosen.clone() - rejected.clone()).mul_scalar(beta);
                let eps = self.label_smoothing;
                (-log_sigmoid(x.clone())).mul_scalar(1.0 - eps) - log_sigmoid(-x).mul_scalar(eps)
            }
            Trl07LossKind::Hinge => {
                relu(-(chosen.clone() - rejected.clone()).mul_scalar(beta) + 1.0)
            }
            Trl07LossKind::Ipo => {
                let gap = (chosen.clone() - rejected.clone()).sub_scalar(1.0 / (2.0 * beta));
                gap.clone() * gap
            }
        };
        DpoOutput {
            loss: per_pair.mean(),
            chosen_rewards: chosen.detach().mul_scalar(beta),
            rejected_rewards: rejected.detach().mul_scalar(beta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use burn::tensor::{Tensor, TensorData};

    fn logps(values: [[f32; 2]; 4]) -> PairLogps<Cpu> {
        let t = |v: [f32; 2]| {
            Tensor::<Cpu, 1>::from_data(TensorData::new(v.to_vec(), [2]), &cpu_device())
        };
        PairLogps {
            policy_chosen: t(values[0]),
            policy_rejected: t(values[1]),
            ref_chosen: t(values[2]),
            ref_rejected: t(values[3]),
            chosen_tokens: t([1.0, 1.0]),
            rejected_tokens: t([1.0, 1.0]),
        }
    }

    /// Two pairs; log-ratios chosen = [0.5, −1.5], rejected = [−0.5, 0.25],
    /// so the gaps are x = [1.0, −1.75].
    fn inputs() -> PairLogps<Cpu> {
        logps([
            [-10.0, -20.0],
            [-12.0, -19.75],
            [-10.5, -18.5],
            [-11.5, -20.0],
        ])
    }

    fn loss(kind: Trl07LossKind, beta: f64, label_smoothing: f64) -> f64 {
        let out = Trl07Loss {
            kind,
            beta,
            label_smoothing,
        }
        .compute(&inputs());
        f64::from(out.loss.into_data().to_vec::<f32>().unwrap()[0])
    }

    fn softplus(x: f64) -> f64 {
        x.exp().ln_1p()
    }

    #[test]
    fn sigmoid_is_conservative_with_label_smoothing() {
        // −log σ(z) = softplus(−z), z = β·x with β = 0.5.
        let plain = (softplus(-0.5) + softplus(0.875)) / 2.0;
        assert!((loss(Trl07LossKind::Sigmoid, 0.5, 0.0) - plain).abs() < 1e-6);
        let eps = 0.1;
        let smoothed = ((1.0 - eps) * (softplus(-0.5) + softplus(0.875))
            + eps * (softplus(0.5) + softplus(-0.875)))
            / 2.0;
        assert!((loss(Trl07LossKind::Sigmoid, 0.5, eps) - smoothed).abs() < 1e-6);
    }

    #[test]
    fn hinge_and_ipo_use_the_summed_log_ratios() {
        let hinge = ((1.0f64 - 0.5).max(0.0) + (1.0f64 + 0.875).max(0.0)) / 2.0;
        assert!((loss(Trl07LossKind::Hinge, 0.5, 0.0) - hinge).abs() < 1e-6);
        // (x − 1/(2β))² with β = 0.5: (1 − 1)², (−1.75 − 1)².
        let ipo = (0.0 + 2.75f64 * 2.75) / 2.0;
        assert!((loss(Trl07LossKind::Ipo, 0.5, 0.0) - ipo).abs() < 1e-5);
    }

    #[test]
    fn one_known_loss_type_only() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(Trl07Loss::from_names(&names(&["sigmoid"]), 0.1, 0.0).is_ok());
        let err = Trl07Loss::from_names(&names(&["robust"]), 0.1, 0.0).unwrap_err();
        assert!(err.contains("not a TRL 0.7.10 loss type"), "{err}");
        assert!(Trl07Loss::from_names(&names(&["sigmoid", "ipo"]), 0.1, 0.0).is_err());
    }
}
