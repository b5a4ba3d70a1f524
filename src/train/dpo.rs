//! The DPO loss family of TRL 1.16.0 (`trl/trainer/dpo_trainer.py`,
//! `DPOTrainer._compute_loss`; options from `trl/trainer/dpo_config.py`), as
//! pure tensor functions of the summed completion log-probs of each pair.
//!
//! Why pure functions of log-probs: every TRL loss type is a function of the
//! four per-pair sums (policy/reference × chosen/rejected), plus the completion
//! token counts for the length-normalised ones (`ipo`, `sigmoid_norm`, `sft`).
//! The forward passes that produce those sums live in `train::logps`; keeping
//! the loss apart lets it be tested number for number against TRL's own code
//! (`scripts/trl_loss_values.py`).
//!
//! What TRL 1.16 does, and this module therefore does:
//! * Each term's per-pair loss is averaged over the pairs of the micro-batch,
//!   multiplied by its `loss_weights` entry (1.0 by default) and summed over
//!   the terms (`loss += per_sequence_loss.mean() * loss_weight`).
//! * The logged rewards are `beta · (policy − reference)` log-prob ratios,
//!   detached, whatever the loss type.
//! * `label_smoothing` is read only by `robust`, `exo_pair`, `aot` and
//!   `aot_unpaired`. In particular TRL 1.16's `sigmoid` ignores it (TRL 0.x's
//!   "conservative DPO" smoothing of `sigmoid` is gone).
//! * `bco_pair` is stateless in TRL 1.16: the running reward mean (`RunningMoments`)
//!   of TRL 0.x's BCO pair loss was removed. [`DpoLossState`] is kept so the
//!   training loop has one place for cross-step loss state.
//! * Every loss type except `sft` needs the reference log-probs; TRL 1.16 has
//!   no reference-free mode.
//!
//! Not modelled (they change the inputs, not this module's formulas, or are
//! off by default): `f_divergence_type` other than `reverse_kl`, WPO
//! `use_weighting`, `ld_alpha` (it changes how the log-prob sums are formed).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::backend::Backend;

/// TRL `DPOConfig.discopop_tau` default (the DiscoPOP paper's value).
pub const DEFAULT_DISCOPOP_TAU: f64 = 0.05;

/// One loss term, named as TRL's `loss_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DpoLossKind {
    /// `sigmoid`: the original DPO loss, `−log σ(β·Δ)`.
    Sigmoid,
    /// `robust`: rDPO, unbiased under label flips with probability `label_smoothing`.
    Robust,
    /// `hinge`: SLiC, `relu(1 − β·Δ)`.
    Hinge,
    /// `ipo`: IPO on per-token (length-normalised) log-ratios, `(Δ̄ − 1/(2β))²`.
    Ipo,
    /// `exo_pair`: EXO, KL to the smoothed label `[1 − ε, ε]`; needs `label_smoothing > 0`.
    ExoPair,
    /// `nca_pair`: NCA on the two rewards separately.
    NcaPair,
    /// `sppo_hard`: SPPO with hard win probabilities.
    SppoHard,
    /// `bco_pair`: BCO on paired data (stateless in TRL 1.16).
    BcoPair,
    /// `aot`: alignment via optimal transport, paired (sorts across the batch).
    Aot,
    /// `aot_unpaired`: alignment via optimal transport, unpaired.
    AotUnpaired,
    /// `apo_zero`: APO when the chosen completions beat the model's own.
    ApoZero,
    /// `apo_down`: APO when the model's own completions beat the chosen ones.
    ApoDown,
    /// `discopop`: DiscoPOP's log-ratio-modulated loss (uses `discopop_tau`).
    DiscoPop,
    /// `sft`: negative log-likelihood of the chosen completions (token mean).
    Sft,
    /// `sigmoid_norm`: `sigmoid` on per-token (length-normalised) log-ratios.
    SigmoidNorm,
}

impl DpoLossKind {
    /// Every loss type, in the order TRL 1.16 lists them.
    pub const ALL: [DpoLossKind; 15] = [
        DpoLossKind::Sigmoid,
        DpoLossKind::Hinge,
        DpoLossKind::Ipo,
        DpoLossKind::ExoPair,
        DpoLossKind::NcaPair,
        DpoLossKind::Robust,
        DpoLossKind::BcoPair,
        DpoLossKind::SppoHard,
        DpoLossKind::Aot,
        DpoLossKind::AotUnpaired,
        DpoLossKind::ApoZero,
        DpoLossKind::ApoDown,
        DpoLossKind::DiscoPop,
        DpoLossKind::Sft,
        DpoLossKind::SigmoidNorm,
    ];

    /// The TRL `loss_type` string.
    pub fn name(self) -> &'static str {
        match self {
            DpoLossKind::Sigmoid => "sigmoid",
            DpoLossKind::Robust => "robust",
            DpoLossKind::Hinge => "hinge",
            DpoLossKind::Ipo => "ipo",
            DpoLossKind::ExoPair => "exo_pair",
            DpoLossKind::NcaPair => "nca_pair",
            DpoLossKind::SppoHard => "sppo_hard",
            DpoLossKind::BcoPair => "bco_pair",
            DpoLossKind::Aot => "aot",
            DpoLossKind::AotUnpaired => "aot_unpaired",
            DpoLossKind::ApoZero => "apo_zero",
            DpoLossKind::ApoDown => "apo_down",
            DpoLossKind::DiscoPop => "discopop",
            DpoLossKind::Sft => "sft",
            DpoLossKind::SigmoidNorm => "sigmoid_norm",
        }
    }

    /// Whether the term reads the reference log-probs (all but `sft`).
    pub fn uses_reference(self) -> bool {
        self != DpoLossKind::Sft
    }

    /// Whether the term reads the completion token counts.
    pub fn uses_token_counts(self) -> bool {
        matches!(
            self,
            DpoLossKind::Ipo | DpoLossKind::Sft | DpoLossKind::SigmoidNorm
        )
    }

    /// Whether the term reads `label_smoothing`.
    pub fn uses_label_smoothing(self) -> bool {
        matches!(
            self,
            DpoLossKind::Robust
                | DpoLossKind::ExoPair
                | DpoLossKind::Aot
                | DpoLossKind::AotUnpaired
        )
    }
}

impl fmt::Display for DpoLossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DpoLossKind {
    type Err = DpoConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DpoLossKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| DpoConfigError::UnknownLossType(s.to_string()))
    }
}

/// Comma-separated TRL names of every loss type, for error messages.
fn valid_names() -> String {
    DpoLossKind::ALL.map(DpoLossKind::name).join(", ")
}

/// A DPO setting that TRL would reject or that makes the loss meaningless,
/// reported before any work starts. Messages name the `DPOConfig` key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpoConfigError {
    #[error("unknown `loss_type` {0:?}; valid values: {names}", names = valid_names())]
    UnknownLossType(String),
    #[error("`loss_type` is empty; give at least one of: {names}", names = valid_names())]
    NoLossType,
    #[error("`beta` must be a finite number > 0, got {0}")]
    Beta(f64),
    #[error("`label_smoothing` must lie in [0.0, 0.5), got {0}")]
    LabelSmoothing(f64),
    #[error(
        "`label_smoothing` must be > 0.0 with the `exo_pair` loss (the EXO paper recommends 1e-3)"
    )]
    ExoPairNeedsSmoothing,
    #[error(
        "`loss_weights` must have the same length as `loss_type`: got {weights} weights for {types} loss types"
    )]
    LossWeightsLength { weights: usize, types: usize },
    #[error("`loss_weights` must be finite numbers, got {0}")]
    LossWeight(f64),
    #[error("`discopop_tau` must be a finite number > 0, got {0}")]
    DiscopopTau(f64),
}

/// Validated loss settings: the weighted terms and the scalars they read.
#[derive(Clone, Debug, PartialEq)]
pub struct DpoLossSpec {
    /// `(loss type, loss weight)` in `loss_type` order.
    pub terms: Vec<(DpoLossKind, f64)>,
    /// β, the strength of the tie to the reference (τ for `ipo`).
    pub beta: f64,
    /// ε of `robust`, `exo_pair`, `aot` and `aot_unpaired`.
    pub label_smoothing: f64,
    /// τ of `discopop`; [`DEFAULT_DISCOPOP_TAU`] unless set with
    /// [`DpoLossSpec::with_discopop_tau`].
    pub discopop_tau: f64,
}

impl DpoLossSpec {
    /// Checks the settings the way TRL 1.16 does (`DPOConfig.__post_init__`,
    /// `DPOTrainer.__init__`) and a little more: TRL only warns about a
    /// `label_smoothing` outside `[0, 0.5)` for `robust` and does not check
    /// `beta`; both are errors here, whatever the loss type.
    pub fn new(
        kinds: Vec<DpoLossKind>,
        weights: Option<Vec<f64>>,
        beta: f64,
        label_smoothing: f64,
    ) -> Result<Self, DpoConfigError> {
        if kinds.is_empty() {
            return Err(DpoConfigError::NoLossType);
        }
        if !(beta.is_finite() && beta > 0.0) {
            return Err(DpoConfigError::Beta(beta));
        }
        if !(0.0..0.5).contains(&label_smoothing) {
            return Err(DpoConfigError::LabelSmoothing(label_smoothing));
        }
        if label_smoothing == 0.0 && kinds.contains(&DpoLossKind::ExoPair) {
            return Err(DpoConfigError::ExoPairNeedsSmoothing);
        }
        let weights = match weights {
            None => vec![1.0; kinds.len()],
            Some(w) if w.len() != kinds.len() => {
                return Err(DpoConfigError::LossWeightsLength {
                    weights: w.len(),
                    types: kinds.len(),
                });
            }
            Some(w) => w,
        };
        if let Some(&bad) = weights.iter().find(|w| !w.is_finite()) {
            return Err(DpoConfigError::LossWeight(bad));
        }
        Ok(Self {
            terms: kinds.into_iter().zip(weights).collect(),
            beta,
            label_smoothing,
            discopop_tau: DEFAULT_DISCOPOP_TAU,
        })
    }

    /// Sets `discopop_tau` (TRL `DPOConfig.discopop_tau`).
    pub fn with_discopop_tau(mut self, tau: f64) -> Result<Self, DpoConfigError> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(DpoConfigError::DiscopopTau(tau));
        }
        self.discopop_tau = tau;
        Ok(self)
    }
}

/// Summed completion log-probs of each pair, shape `[pairs]` each.
#[derive(Clone, Debug)]
pub struct PairLogps<B: Backend> {
    pub policy_chosen: Tensor<B, 1>,
    pub policy_rejected: Tensor<B, 1>,
    pub ref_chosen: Tensor<B, 1>,
    pub ref_rejected: Tensor<B, 1>,
    /// Completion token counts of the chosen completions, as floats
    /// (TRL's `completion_mask.sum(dim=1)`).
    pub chosen_tokens: Tensor<B, 1>,
    /// Completion token counts of the rejected completions, as floats.
    pub rejected_tokens: Tensor<B, 1>,
}

/// The micro-batch loss and the per-pair rewards TRL logs.
#[derive(Clone, Debug)]
pub struct DpoOutput<B: Backend> {
    /// Shape `[1]`: the weighted sum over terms of each term's mean over pairs.
    pub loss: Tensor<B, 1>,
    /// `β · (policy − reference)` of the chosen completions, `[pairs]`, detached.
    pub chosen_rewards: Tensor<B, 1>,
    /// `β · (policy − reference)` of the rejected completions, `[pairs]`, detached.
    pub rejected_rewards: Tensor<B, 1>,
}

/// Loss state carried from one micro-batch to the next. Empty: no TRL 1.16
/// loss type keeps any (`bco_pair` lost its running reward mean after TRL
/// 0.x). A fresh state is `Default`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DpoLossState {}

/// The DPO loss of one micro-batch (TRL 1.16 `DPOTrainer._compute_loss` with
/// `f_divergence_type="reverse_kl"`, `use_weighting=False`).
///
/// Differentiable with respect to the policy log-probs; the rewards are
/// detached. The reference log-probs and token counts are treated as data.
pub fn dpo_loss<B: Backend>(
    spec: &DpoLossSpec,
    logps: &PairLogps<B>,
    _state: &mut DpoLossState,
) -> DpoOutput<B> {
    let ratios = LogRatios::new(logps);
    let loss = spec
        .terms
        .iter()
        .map(|&(kind, weight)| {
            term_loss(kind, spec, logps, &ratios)
                .mean()
                .mul_scalar(weight)
        })
        .reduce(|total, term| total + term);
    // `DpoLossSpec::new` rejects an empty term list; a hand-built empty spec
    // contributes nothing, as TRL's `loss = 0.0` start would.
    let loss = loss.unwrap_or_else(|| Tensor::zeros([1], &logps.policy_chosen.device()));
    DpoOutput {
        loss,
        chosen_rewards: ratios.chosen.clone().detach().mul_scalar(spec.beta),
        rejected_rewards: ratios.rejected.clone().detach().mul_scalar(spec.beta),
    }
}

/// The log-ratios TRL names `chosen_logratios`, `rejected_logratios` and
/// `delta_score` (= `chosen − rejected`).
struct LogRatios<B: Backend> {
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
    delta: Tensor<B, 1>,
}

impl<B: Backend> LogRatios<B> {
    fn new(logps: &PairLogps<B>) -> Self {
        let chosen = logps.policy_chosen.clone() - logps.ref_chosen.clone();
        let rejected = logps.policy_rejected.clone() - logps.ref_rejected.clone();
        let delta = chosen.clone() - rejected.clone();
        Self {
            chosen,
            rejected,
            delta,
        }
    }
}

/// Per-pair loss of one term, `[pairs]`.
fn term_loss<B: Backend>(
    kind: DpoLossKind,
    spec: &DpoLossSpec,
    logps: &PairLogps<B>,
    r: &LogRatios<B>,
) -> Tensor<B, 1> {
    let beta = spec.beta;
    let eps = spec.label_smoothing;
    match kind {
        DpoLossKind::Sigmoid => -log_sigmoid(r.delta.clone().mul_scalar(beta)),
        DpoLossKind::Robust => {
            let x = r.delta.clone().mul_scalar(beta);
            let clean = log_sigmoid(x.clone()).mul_scalar(-(1.0 - eps));
            let flipped = log_sigmoid(-x).mul_scalar(-eps);
            (clean - flipped).div_scalar(1.0 - 2.0 * eps)
        }
        DpoLossKind::Hinge => relu(-r.delta.clone().mul_scalar(beta) + 1.0),
        DpoLossKind::Ipo => {
            // TRL 1.16 divides each summed log-ratio by its completion's token
            // count (at least 1) so that β means the same across lengths.
            let chosen = r.chosen.clone() / logps.chosen_tokens.clone().clamp_min(1.0);
            let rejected = r.rejected.clone() / logps.rejected_tokens.clone().clamp_min(1.0);
            let gap = (chosen - rejected).sub_scalar(1.0 / (2.0 * beta));
            gap.clone() * gap
        }
        DpoLossKind::ExoPair => {
            // KL(softmax(β·[chosen, rejected]) ‖ [1 − ε, ε]) for two outcomes.
            // TRL builds ε as an fp32 tensor, so its logs are taken in fp32.
            let eps32 = eps as f32;
            let log_pw = f64::from((-eps32).ln_1p());
            let log_pl = f64::from(eps32.ln());
            let x = r.delta.clone().mul_scalar(beta);
            let win = sigmoid(x.clone()) * log_sigmoid(x.clone()).sub_scalar(log_pw);
            let lose = sigmoid(-x.clone()) * log_sigmoid(-x).sub_scalar(log_pl);
            win + lose
        }
        DpoLossKind::NcaPair => {
            let chosen = r.chosen.clone().mul_scalar(beta);
            let rejected = r.rejected.clone().mul_scalar(beta);
            -log_sigmoid(chosen.clone())
                - log_sigmoid(-chosen).mul_scalar(0.5)
                - log_sigmoid(-rejected).mul_scalar(0.5)
        }
        DpoLossKind::BcoPair => {
            let chosen = r.chosen.clone().mul_scalar(beta);
            let rejected = r.rejected.clone().mul_scalar(beta);
            -log_sigmoid(chosen) - log_sigmoid(-rejected)
        }
        DpoLossKind::SppoHard => {
            let margin = 0.5 / beta;
            let win = r.chosen.clone().sub_scalar(margin);
            let lose = r.rejected.clone().add_scalar(margin);
            win.clone() * win + lose.clone() * lose
        }
        DpoLossKind::Aot => {
            let policy = logps.policy_chosen.clone() - logps.policy_rejected.clone();
            let reference = logps.ref_chosen.clone() - logps.ref_rejected.clone();
            smoothed_sigmoid(sorted(policy) - sorted(reference), beta, eps)
        }
        DpoLossKind::AotUnpaired => smoothed_sigmoid(
            sorted(r.chosen.clone()) - sorted(r.rejected.clone()),
            beta,
            eps,
        ),
        DpoLossKind::ApoZero => {
            let chosen = -sigmoid(r.chosen.clone().mul_scalar(beta)) + 1.0;
            let rejected = sigmoid(r.rejected.clone().mul_scalar(beta));
            chosen + rejected
        }
        DpoLossKind::ApoDown => {
            let chosen = sigmoid(r.chosen.clone().mul_scalar(beta));
            let rejected = -sigmoid((r.chosen.clone() - r.rejected.clone()).mul_scalar(beta)) + 1.0;
            chosen + rejected
        }
        DpoLossKind::DiscoPop => {
            let logits = r.delta.clone().mul_scalar(beta);
            let mix = sigmoid(logits.clone().div_scalar(spec.discopop_tau));
            let logistic = -log_sigmoid(logits.clone());
            let exponential = (-logits).exp();
            logistic * (-mix.clone() + 1.0) + exponential * mix
        }
        DpoLossKind::Sft => {
            // Token mean over every chosen completion token of the batch, the
            // same for each pair (TRL expands one scalar). With zero tokens
            // TRL's mean is NaN; the count is clamped to 1 here instead.
            let pairs = logps.policy_chosen.dims()[0];
            let tokens = logps.chosen_tokens.clone().sum().clamp_min(1.0);
            let nll = -(logps.policy_chosen.clone().sum() / tokens);
            nll.expand([pairs])
        }
        DpoLossKind::SigmoidNorm => {
            let chosen = r.chosen.clone() / logps.chosen_tokens.clone().clamp_min(1.0);
            let rejected = r.rejected.clone() / logps.rejected_tokens.clone().clamp_min(1.0);
            -log_sigmoid((chosen - rejected).mul_scalar(beta))
        }
    }
}

/// `x` sorted ascending along the batch; differentiable (a gather by the
/// sorting permutation), like `torch.sort(...).values`.
fn sorted<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let order = x.clone().argsort(0);
    x.select(0, order)
}

/// `−(1 − ε)·log σ(β·x) − ε·log σ(−β·x)`, the label-smoothed logistic loss of
/// the AOT terms.
fn smoothed_sigmoid<B: Backend>(x: Tensor<B, 1>, beta: f64, eps: f64) -> Tensor<B, 1> {
    let x = x.mul_scalar(beta);
    (-log_sigmoid(x.clone())).mul_scalar(1.0 - eps) - log_sigmoid(-x).mul_scalar(eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain, cpu_device};
    use burn::tensor::TensorData;

    /// One set of fixed inputs: summed log-probs and token counts per pair.
    struct Inputs {
        policy_chosen: &'static [f32],
        policy_rejected: &'static [f32],
        ref_chosen: &'static [f32],
        ref_rejected: &'static [f32],
        chosen_tokens: &'static [f32],
        rejected_tokens: &'static [f32],
    }

    /// The same literals as `INPUTS` in `scripts/trl_loss_values.py`.
    const INPUTS: [Inputs; 2] = [
        Inputs {
            policy_chosen: &[-12.5, -30.25, -7.75, -45.0],
            policy_rejected: &[-14.0, -28.5, -11.25, -44.0],
            ref_chosen: &[-13.0, -29.0, -9.5, -46.5],
            ref_rejected: &[-13.5, -29.75, -10.0, -43.25],
            chosen_tokens: &[5.0, 12.0, 3.0, 20.0],
            rejected_tokens: &[6.0, 10.0, 4.0, 18.0],
        },
        Inputs {
            policy_chosen: &[-3.125, -60.5, -21.0],
            policy_rejected: &[-9.5, -58.0, -20.25],
            ref_chosen: &[-4.0, -61.75, -19.5],
            ref_rejected: &[-8.0, -57.5, -22.0],
            chosen_tokens: &[2.0, 31.0, 9.0],
            rejected_tokens: &[7.0, 25.0, 1.0],
        },
    ];

    /// Settings, and what TRL computed for them on `INPUTS[inputs]`.
    struct Case {
        kinds: &'static [&'static str],
        weights: Option<&'static [f64]>,
        beta: f64,
        label_smoothing: f64,
        discopop_tau: f64,
        inputs: usize,
        loss: f64,
        chosen_rewards: &'static [f64],
        rejected_rewards: &'static [f64],
        /// d loss / d policy_chosen.
        grad_chosen: &'static [f64],
        /// d loss / d policy_rejected.
        grad_rejected: &'static [f64],
    }

    // BEGIN GENERATED: `/opt/trl-venv/bin/python scripts/trl_loss_values.py`
    // (trl 1.16.0's `DPOTrainer._compute_loss` run on stubs; see the script).
    // Generated by scripts/trl_loss_values.py with trl 1.16.0, torch 2.15.0+cu132.
    const CASES: &[Case] = &[
        Case {
            kinds: &["sigmoid"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6529133319854736,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.011875520460307598,
                -0.01405441202223301,
                -0.010638936422765255,
                -0.011099652387201786,
            ],
            grad_rejected: &[
                0.011875520460307598,
                0.01405441202223301,
                0.010638936422765255,
                0.011099652387201786,
            ],
        },
        Case {
            kinds: &["sigmoid"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.8064596652984619,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.03895106166601181,
                -0.049035828560590744,
                -0.13924726843833923,
            ],
            grad_rejected: &[
                0.03895106166601181,
                0.049035828560590744,
                0.13924726843833923,
            ],
        },
        Case {
            kinds: &["sigmoid"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.3,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.8064596652984619,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.03895106166601181,
                -0.049035828560590744,
                -0.13924726843833923,
            ],
            grad_rejected: &[
                0.03895106166601181,
                0.049035828560590744,
                0.13924726843833923,
            ],
        },
        Case {
            kinds: &["robust"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6529133319854736,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.011875520460307598,
                -0.01405441202223301,
                -0.010638936422765255,
                -0.011099652387201786,
            ],
            grad_rejected: &[
                0.011875520460307598,
                0.01405441202223301,
                0.010638936422765255,
                0.011099652387201786,
            ],
        },
        Case {
            kinds: &["robust"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.2,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6216632127761841,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.020208854228258133,
                -0.02238774485886097,
                -0.01897227019071579,
                -0.01943298801779747,
            ],
            grad_rejected: &[
                0.020208854228258133,
                0.02238774485886097,
                0.01897227019071579,
                0.01943298801779747,
            ],
        },
        Case {
            kinds: &["robust"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.1,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.7882304191589355,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.05978439748287201,
                -0.06986916065216064,
                -0.16008059680461884,
            ],
            grad_rejected: &[
                0.05978439748287201,
                0.06986916065216064,
                0.16008059680461884,
            ],
        },
        Case {
            kinds: &["hinge"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.90625,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.02500000037252903,
                -0.02500000037252903,
                -0.02500000037252903,
                -0.02500000037252903,
            ],
            grad_rejected: &[
                0.02500000037252903,
                0.02500000037252903,
                0.02500000037252903,
                0.02500000037252903,
            ],
        },
        Case {
            kinds: &["hinge"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.9166666865348816,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[-0.0, -0.1666666716337204, -0.1666666716337204],
            grad_rejected: &[0.0, 0.1666666716337204, 0.1666666716337204],
        },
        Case {
            kinds: &["ipo"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 22.808895111083984,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.4816666543483734,
                -0.2178819328546524,
                -0.6840277314186096,
                -0.12208332866430283,
            ],
            grad_rejected: &[
                0.40138888359069824,
                0.2614583373069763,
                0.5130208134651184,
                0.13564814627170563,
            ],
        },
        Case {
            kinds: &["ipo"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 3.1703968048095703,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.1160714253783226,
                -0.020208116620779037,
                -0.21604937314987183,
            ],
            grad_rejected: &[
                0.03316326439380646,
                0.025058064609766006,
                1.9444444179534912,
            ],
        },
        Case {
            kinds: &["exo_pair"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.001,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 2.606804847717285,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.04243604093790054,
                -0.04403803125023842,
                -0.040376901626586914,
                -0.04123685508966446,
            ],
            grad_rejected: &[
                0.04243604093790054,
                0.04403803125023842,
                0.040376901626586914,
                0.04123685508966446,
            ],
        },
        Case {
            kinds: &["exo_pair"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.2,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.32094284892082214,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.005933603271842003,
                -0.017695264890789986,
                -0.06898413598537445,
            ],
            grad_rejected: &[
                0.005933603271842003,
                0.017695264890789986,
                0.06898413598537445,
            ],
        },
        Case {
            kinds: &["nca_pair"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 1.3668084144592285,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.005781347397714853,
                -0.007420350797474384,
                -0.0046135494485497475,
                -0.004846381489187479,
            ],
            grad_rejected: &[
                0.006093782838433981,
                0.006640117149800062,
                0.005859883036464453,
                0.00601573521271348,
            ],
        },
        Case {
            kinds: &["nca_pair"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 1.4483122825622559,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.014750879257917404,
                -0.0038279518485069275,
                -0.08646135032176971,
            ],
            grad_rejected: &[
                0.026735108345746994,
                0.03648529201745987,
                0.05881541967391968,
            ],
        },
        Case {
            kinds: &["sppo_hard"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 43.390625,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[-2.25, -3.125, -1.625, -1.75],
            grad_rejected: &[2.25, 3.125, 1.875, 2.125],
        },
        Case {
            kinds: &["sppo_hard"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 4.796875,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[-0.0833333358168602, 0.1666666716337204, -1.6666667461395264],
            grad_rejected: &[-0.3333333432674408, 0.3333333432674408, 1.8333333730697632],
        },
        Case {
            kinds: &["bco_pair"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 1.3428735733032227,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.012187565676867962,
                -0.013280234299600124,
                -0.011409033089876175,
                -0.011564253829419613,
            ],
            grad_rejected: &[
                0.012187565676867962,
                0.013280234299600124,
                0.011719766072928905,
                0.01203147042542696,
            ],
        },
        Case {
            kinds: &["bco_pair"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 1.4166537523269653,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.0653894767165184,
                -0.05810752511024475,
                -0.11319645494222641,
            ],
            grad_rejected: &[
                0.05347021669149399,
                0.07297058403491974,
                0.11763083934783936,
            ],
        },
        Case {
            kinds: &["aot"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6503453254699707,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.011875520460307598,
                -0.011564253829419613,
                -0.010792001150548458,
                -0.013435745611786842,
            ],
            grad_rejected: &[
                0.011875520460307598,
                0.011564253829419613,
                0.010792001150548458,
                0.013435745611786842,
            ],
        },
        Case {
            kinds: &["aot"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.1,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.8210430145263672,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.02228439599275589,
                -0.032369162887334824,
                -0.12258059531450272,
            ],
            grad_rejected: &[
                0.02228439599275589,
                0.032369162887334824,
                0.12258059531450272,
            ],
        },
        Case {
            kinds: &["aot_unpaired"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6480861902236938,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.011719766072928905,
                -0.012500000186264515,
                -0.012187565676867962,
                -0.011254149489104748,
            ],
            grad_rejected: &[
                0.011254149489104748,
                0.012187565676867962,
                0.012500000186264515,
                0.011719766072928905,
            ],
        },
        Case {
            kinds: &["aot_unpaired"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.1,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.6567292213439941,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.039098240435123444,
                -0.07702941447496414,
                -0.06666667014360428,
            ],
            grad_rejected: &[
                0.06666667014360428,
                0.039098240435123444,
                0.07702941447496414,
            ],
        },
        Case {
            kinds: &["apo_zero"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.976601243019104,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.006246095523238182,
                -0.0062256488017737865,
                -0.006202391814440489,
                -0.006214975379407406,
            ],
            grad_rejected: &[
                0.006246095523238182,
                0.006225649267435074,
                0.0062256488017737865,
                0.006241219583898783,
            ],
        },
        Case {
            kinds: &["apo_zero"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.9615301489830017,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.039734773337841034,
                -0.037848617881536484,
                -0.036315832287073135,
            ],
            grad_rejected: &[
                0.036315832287073135,
                0.041022345423698425,
                0.03460875526070595,
            ],
        },
        Case {
            kinds: &["apo_down"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.9922743439674377,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                1.1694151908159256e-05,
                7.229670882225037e-05,
                9.093387052416801e-05,
                4.341406747698784e-05,
            ],
            grad_rejected: &[
                0.006234401371330023,
                0.006153352092951536,
                0.006111457943916321,
                0.006171561311930418,
            ],
        },
        Case {
            kinds: &["apo_down"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.9810814261436462,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                0.00988682173192501,
                0.003239862620830536,
                0.01340736448764801,
            ],
            grad_rejected: &[
                0.029847951605916023,
                0.03460875526070595,
                0.022908467799425125,
            ],
        },
        Case {
            kinds: &["discopop"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.8098366260528564,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.007667739875614643,
                -0.012652501463890076,
                -0.01827101595699787,
                -0.018716130405664444,
            ],
            grad_rejected: &[
                0.007667739875614643,
                0.012652501463890076,
                0.01827101595699787,
                0.018716130405664444,
            ],
        },
        Case {
            kinds: &["discopop"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.8421964645385742,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.05083046481013298,
                -0.06947700679302216,
                -0.13924726843833923,
            ],
            grad_rejected: &[
                0.05083046481013298,
                0.06947700679302216,
                0.13924726843833923,
            ],
        },
        Case {
            kinds: &["discopop"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.3,
            inputs: 1,
            loss: 0.8267226219177246,
            chosen_rewards: &[0.08749999850988388, 0.125, -0.15000000596046448],
            rejected_rewards: &[
                -0.15000000596046448,
                -0.05000000074505806,
                0.17499999701976776,
            ],
            grad_chosen: &[
                -0.017733339220285416,
                -0.01753372512757778,
                -0.015308200381696224,
            ],
            grad_rejected: &[
                0.017733339220285416,
                0.01753372512757778,
                0.015308200381696224,
            ],
        },
        Case {
            kinds: &["sft"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 2.387500047683716,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.02500000037252903,
                -0.02500000037252903,
                -0.02500000037252903,
                -0.02500000037252903,
            ],
            grad_rejected: &[0.0, 0.0, 0.0, 0.0],
        },
        Case {
            kinds: &["sft"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 2.014880895614624,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.02380952425301075,
                -0.02380952425301075,
                -0.02380952425301075,
            ],
            grad_rejected: &[0.0, 0.0, 0.0],
        },
        Case {
            kinds: &["sigmoid_norm"],
            weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 0.6813457012176514,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.002477083820849657,
                -0.0010536020854488015,
                -0.003980159293860197,
                -0.0006213541491888463,
            ],
            grad_rejected: &[
                0.0020642366725951433,
                0.0012643224326893687,
                0.0029851195868104696,
                0.0006903934990987182,
            ],
        },
        Case {
            kinds: &["sigmoid_norm"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 0.8348569869995117,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.03493668884038925,
                -0.002647635992616415,
                -0.013384963385760784,
            ],
            grad_rejected: &[
                0.009981910698115826,
                0.003283068537712097,
                0.12046466767787933,
            ],
        },
        Case {
            kinds: &["sigmoid", "bco_pair", "sft"],
            weights: Some(&[0.8, 0.2, 1.0]),
            beta: 0.1,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            inputs: 0,
            loss: 3.178405523300171,
            chosen_rewards: &[
                0.05000000074505806,
                -0.125,
                0.17499999701976776,
                0.15000000596046448,
            ],
            rejected_rewards: &[-0.05000000074505806, 0.125, -0.125, -0.07500000298023224],
            grad_chosen: &[
                -0.036937929689884186,
                -0.03889957815408707,
                -0.03579295426607132,
                -0.036192573606967926,
            ],
            grad_rejected: &[
                0.01193793024867773,
                0.013899576850235462,
                0.01085510291159153,
                0.011286016553640366,
            ],
        },
        Case {
            kinds: &["ipo", "hinge", "aot"],
            weights: None,
            beta: 0.5,
            label_smoothing: 0.1,
            discopop_tau: 0.05,
            inputs: 1,
            loss: 4.908106327056885,
            chosen_rewards: &[0.4375, 0.625, -0.75],
            rejected_rewards: &[-0.75, -0.25, 0.875],
            grad_chosen: &[
                -0.1383558213710785,
                -0.21924395859241486,
                -0.5052966475486755,
            ],
            grad_rejected: &[0.05544766038656235, 0.22409389913082123, 2.233691692352295],
        },
    ];
    // END GENERATED

    fn tensor<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
    }

    fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
        t.into_data()
            .to_vec::<f32>()
            .expect("fp32 tensor")
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// fp32 agreement: 1e-6, relative above magnitude 1 (losses like
    /// `sppo_hard` are tens, where one fp32 ulp is already ~2e-6).
    fn assert_close(what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-6 * w.abs().max(1.0);
            assert!(
                (g - w).abs() <= tol,
                "{what}[{i}]: got {g}, TRL {w} (tol {tol})"
            );
        }
    }

    fn spec_of(case: &Case) -> DpoLossSpec {
        let kinds = case
            .kinds
            .iter()
            .map(|name| name.parse().expect("TRL loss name"))
            .collect();
        DpoLossSpec::new(
            kinds,
            case.weights.map(<[f64]>::to_vec),
            case.beta,
            case.label_smoothing,
        )
        .and_then(|spec| spec.with_discopop_tau(case.discopop_tau))
        .expect("valid case")
    }

    fn logps_of<B: Backend>(
        inputs: &Inputs,
        device: &B::Device,
        policy: impl Fn(Tensor<B, 1>) -> Tensor<B, 1>,
    ) -> PairLogps<B> {
        PairLogps {
            policy_chosen: policy(tensor(inputs.policy_chosen, device)),
            policy_rejected: policy(tensor(inputs.policy_rejected, device)),
            ref_chosen: tensor(inputs.ref_chosen, device),
            ref_rejected: tensor(inputs.ref_rejected, device),
            chosen_tokens: tensor(inputs.chosen_tokens, device),
            rejected_tokens: tensor(inputs.rejected_tokens, device),
        }
    }

    /// Loss, rewards and the gradient with respect to the policy log-probs
    /// match TRL 1.16 for every case, on the autodiff backend.
    #[test]
    fn matches_trl_losses_rewards_and_gradients() {
        let device = cpu_device();
        for case in CASES {
            let name = format!(
                "{:?} beta={} ls={}",
                case.kinds, case.beta, case.label_smoothing
            );
            let spec = spec_of(case);
            let logps = logps_of::<CpuTrain>(&INPUTS[case.inputs], &device, Tensor::require_grad);
            let out = dpo_loss(&spec, &logps, &mut DpoLossState::default());
            assert_eq!(out.loss.dims(), [1], "{name}: loss shape");
            assert!(
                !out.chosen_rewards.is_require_grad(),
                "{name}: rewards detached"
            );
            assert!(
                !out.rejected_rewards.is_require_grad(),
                "{name}: rewards detached"
            );
            assert_close(
                &format!("{name} loss"),
                &host(out.loss.clone()),
                &[case.loss],
            );
            assert_close(
                &format!("{name} chosen rewards"),
                &host(out.chosen_rewards),
                case.chosen_rewards,
            );
            assert_close(
                &format!("{name} rejected rewards"),
                &host(out.rejected_rewards),
                case.rejected_rewards,
            );
            let grads = out.loss.backward();
            // A log-prob no term reads (the rejected ones under `sft`) has no
            // gradient in burn; TRL's single leaf gets zeros there.
            let grad = |t: &Tensor<CpuTrain, 1>| {
                t.grad(&grads).map_or_else(|| vec![0.0; t.dims()[0]], host)
            };
            assert_close(
                &format!("{name} grad chosen"),
                &grad(&logps.policy_chosen),
                case.grad_chosen,
            );
            assert_close(
                &format!("{name} grad rejected"),
                &grad(&logps.policy_rejected),
                case.grad_rejected,
            );
        }
    }

    /// The same numbers on the plain backend (the evaluation path, no graph).
    #[test]
    fn matches_trl_without_autodiff() {
        let device = cpu_device();
        for case in CASES {
            let logps = logps_of::<Cpu>(&INPUTS[case.inputs], &device, |t| t);
            let out = dpo_loss(&spec_of(case), &logps, &mut DpoLossState::default());
            assert_close(
                &format!("{:?} loss", case.kinds),
                &host(out.loss),
                &[case.loss],
            );
        }
    }

    /// Every loss type is checked against TRL at least once.
    #[test]
    fn every_loss_type_has_trl_numbers() {
        for kind in DpoLossKind::ALL {
            assert!(
                CASES.iter().any(|c| c.kinds == [kind.name()]),
                "no single-term TRL case for {kind}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for kind in DpoLossKind::ALL {
            assert_eq!(kind.name().parse::<DpoLossKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        let err = "kto".parse::<DpoLossKind>().expect_err("not a DPO loss");
        let message = err.to_string();
        assert!(
            message.contains("`loss_type`") && message.contains("\"kto\""),
            "{message}"
        );
        for kind in DpoLossKind::ALL {
            assert!(message.contains(kind.name()), "{message} lacks {kind}");
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let sigmoid = || vec![DpoLossKind::Sigmoid];
        let message = |r: Result<DpoLossSpec, DpoConfigError>| r.expect_err("invalid").to_string();
        for beta in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(message(DpoLossSpec::new(sigmoid(), None, beta, 0.0)).contains("`beta`"));
        }
        for ls in [-0.1, 0.5, 0.7, f64::NAN] {
            assert!(
                message(DpoLossSpec::new(sigmoid(), None, 0.1, ls)).contains("`label_smoothing`")
            );
        }
        let exo = DpoLossSpec::new(vec![DpoLossKind::ExoPair], None, 0.1, 0.0);
        assert_eq!(exo, Err(DpoConfigError::ExoPairNeedsSmoothing));
        assert!(message(exo).contains("`label_smoothing`"));
        let mismatch = DpoLossSpec::new(sigmoid(), Some(vec![0.5, 0.5]), 0.1, 0.0);
        assert_eq!(
            mismatch,
            Err(DpoConfigError::LossWeightsLength {
                weights: 2,
                types: 1
            })
        );
        assert!(message(mismatch).contains("`loss_weights`"));
        assert!(
            message(DpoLossSpec::new(sigmoid(), Some(vec![f64::NAN]), 0.1, 0.0))
                .contains("`loss_weights`")
        );
        assert!(message(DpoLossSpec::new(vec![], None, 0.1, 0.0)).contains("`loss_type`"));
        let tau =
            DpoLossSpec::new(sigmoid(), None, 0.1, 0.0).and_then(|s| s.with_discopop_tau(0.0));
        assert!(message(tau).contains("`discopop_tau`"));
    }

    #[test]
    fn defaults_follow_trl() {
        let spec = DpoLossSpec::new(vec![DpoLossKind::Sigmoid, DpoLossKind::Sft], None, 0.1, 0.0)
            .expect("valid");
        assert_eq!(
            spec.terms,
            vec![(DpoLossKind::Sigmoid, 1.0), (DpoLossKind::Sft, 1.0)]
        );
        assert_eq!(spec.discopop_tau, 0.05);
    }
}
