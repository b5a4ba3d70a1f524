//! The DPO loss of one micro-batch: TRL 1.16's `DPOTrainer._compute_loss`
//! with `f_divergence_type="reverse_kl"` and `use_weighting=False`.
//!
//! Every loss type is a function of the log-ratios of each pair,
//! `chosen = log π(y_w|x) − log π_ref(y_w|x)` and
//! `rejected = log π(y_l|x) − log π_ref(y_l|x)` (`Δ = chosen − rejected`),
//! sometimes of the raw log-probs and token counts too. Each term's per-pair
//! loss is averaged over the pairs, weighted, and the terms summed.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::backend::Backend;

use super::spec::{DpoLossKind, DpoLossSpec};

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

/// The DPO loss of one micro-batch: `Σ_terms weight · mean_pairs(term)`.
///
/// Differentiable with respect to the policy log-probs; the rewards are
/// detached. The reference log-probs and token counts are treated as data.
pub fn dpo_loss<B: Backend>(spec: &DpoLossSpec, logps: &PairLogps<B>) -> DpoOutput<B> {
    let pair = Pair::new(spec, logps);
    let loss = spec
        .terms
        .iter()
        .map(|&(kind, weight)| term(kind, &pair).mean().mul_scalar(weight))
        .reduce(|total, term| total + term);
    // `DpoLossSpec::new` rejects an empty term list; a hand-built empty spec
    // contributes nothing, as TRL's `loss = 0.0` start would.
    let loss = loss.unwrap_or_else(|| Tensor::zeros([1], &logps.policy_chosen.device()));
    DpoOutput {
        loss,
        chosen_rewards: pair.chosen.clone().detach().mul_scalar(spec.beta),
        rejected_rewards: pair.rejected.clone().detach().mul_scalar(spec.beta),
    }
}

/// **DPO** (Rafailov et al. 2023, "Direct Preference Optimization: Your
/// Language Model is Secretly a Reward Model", eq. 7), TRL's `sigmoid`:
///
/// `L = −log σ(β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])`
///
/// the logistic loss of the Bradley-Terry preference model whose reward is
/// the policy's log-ratio to the reference, scaled by β.
fn sigmoid_loss<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    -log_sigmoid(p.delta.clone().mul_scalar(p.beta))
}

/// Per-pair loss of one term, `[pairs]`.
fn term<B: Backend>(kind: DpoLossKind, p: &Pair<B>) -> Tensor<B, 1> {
    match kind {
        DpoLossKind::Sigmoid => sigmoid_loss(p),
        DpoLossKind::Robust => robust(p),
        DpoLossKind::Hinge => hinge(p),
        DpoLossKind::Ipo => ipo(p),
        DpoLossKind::ExoPair => exo_pair(p),
        DpoLossKind::NcaPair => nca_pair(p),
        DpoLossKind::BcoPair => bco_pair(p),
        DpoLossKind::SppoHard => sppo_hard(p),
        DpoLossKind::Aot => aot(p),
        DpoLossKind::AotUnpaired => aot_unpaired(p),
        DpoLossKind::ApoZero => apo_zero(p),
        DpoLossKind::ApoDown => apo_down(p),
        DpoLossKind::DiscoPop => discopop(p),
        DpoLossKind::Sft => sft(p),
        DpoLossKind::SigmoidNorm => sigmoid_norm(p),
    }
}

/// What the terms read: the settings, the log-probs and the log-ratios TRL
/// names `chosen_logratios`, `rejected_logratios` and `delta_score`.
struct Pair<'a, B: Backend> {
    beta: f64,
    /// ε, `label_smoothing`.
    eps: f64,
    discopop_tau: f64,
    logps: &'a PairLogps<B>,
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
    /// `chosen − rejected`.
    delta: Tensor<B, 1>,
}

impl<'a, B: Backend> Pair<'a, B> {
    fn new(spec: &DpoLossSpec, logps: &'a PairLogps<B>) -> Self {
        let chosen = logps.policy_chosen.clone() - logps.ref_chosen.clone();
        let rejected = logps.policy_rejected.clone() - logps.ref_rejected.clone();
        let delta = chosen.clone() - rejected.clone();
        Self {
            beta: spec.beta,
            eps: spec.label_smoothing,
            discopop_tau: spec.discopop_tau,
            logps,
            chosen,
            rejected,
            delta,
        }
    }

    /// The log-ratios divided by their completion's token count (at least
    /// 1), so that β means the same across lengths (TRL 1.16's `ipo` and
    /// `sigmoid_norm`).
    fn per_token(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let chosen = self.chosen.clone() / self.logps.chosen_tokens.clone().clamp_min(1.0);
        let rejected = self.rejected.clone() / self.logps.rejected_tokens.clone().clamp_min(1.0);
        (chosen, rejected)
    }
}

/// rDPO (Chowdhury et al. 2024): unbiased under labels flipped with
/// probability ε, `(−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)) / (1 − 2ε)`.
fn robust<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let x = p.delta.clone().mul_scalar(p.beta);
    let clean = log_sigmoid(x.clone()).mul_scalar(-(1.0 - p.eps));
    let flipped = log_sigmoid(-x).mul_scalar(-p.eps);
    (clean - flipped).div_scalar(1.0 - 2.0 * p.eps)
}

/// SLiC (Zhao et al. 2023): `relu(1 − βΔ)`.
fn hinge<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    relu(-p.delta.clone().mul_scalar(p.beta) + 1.0)
}

/// IPO (Azar et al. 2023) on per-token log-ratios: `(Δ̄ − 1/(2β))²`.
fn ipo<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let (chosen, rejected) = p.per_token();
    let gap = (chosen - rejected).sub_scalar(1.0 / (2.0 * p.beta));
    gap.clone() * gap
}

/// EXO (Ji et al. 2024): `KL(softmax(β·[chosen, rejected]) ‖ [1 − ε, ε])`
/// for two outcomes. TRL builds ε as an fp32 tensor, so its logs are fp32.
fn exo_pair<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let eps32 = p.eps as f32;
    let log_pw = f64::from((-eps32).ln_1p());
    let log_pl = f64::from(eps32.ln());
    let x = p.delta.clone().mul_scalar(p.beta);
    let win = sigmoid(x.clone()) * log_sigmoid(x.clone()).sub_scalar(log_pw);
    let lose = sigmoid(-x.clone()) * log_sigmoid(-x).sub_scalar(log_pl);
    win + lose
}

/// NCA (Chen et al. 2024) on the two rewards separately.
fn nca_pair<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let chosen = p.chosen.clone().mul_scalar(p.beta);
    let rejected = p.rejected.clone().mul_scalar(p.beta);
    -log_sigmoid(chosen.clone())
        - log_sigmoid(-chosen).mul_scalar(0.5)
        - log_sigmoid(-rejected).mul_scalar(0.5)
}

/// BCO on paired data (Jung et al. 2024), stateless in TRL 1.16.
fn bco_pair<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let chosen = p.chosen.clone().mul_scalar(p.beta);
    let rejected = p.rejected.clone().mul_scalar(p.beta);
    -log_sigmoid(chosen) - log_sigmoid(-rejected)
}

/// SPPO with hard win probabilities (Wu et al. 2024).
fn sppo_hard<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let margin = 0.5 / p.beta;
    let win = p.chosen.clone().sub_scalar(margin);
    let lose = p.rejected.clone().add_scalar(margin);
    win.clone() * win + lose.clone() * lose
}

/// AOT (Melnyk et al. 2024), paired: the sorted policy margins against the
/// sorted reference margins, across the batch.
fn aot<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let logps = p.logps;
    let policy = logps.policy_chosen.clone() - logps.policy_rejected.clone();
    let reference = logps.ref_chosen.clone() - logps.ref_rejected.clone();
    smoothed_sigmoid(sorted(policy) - sorted(reference), p.beta, p.eps)
}

/// AOT, unpaired: sorted chosen log-ratios against sorted rejected ones.
fn aot_unpaired<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let x = sorted(p.chosen.clone()) - sorted(p.rejected.clone());
    smoothed_sigmoid(x, p.beta, p.eps)
}

/// APO-zero (D'Oosterlinck et al. 2024): when the chosen completions beat
/// the model's own, push chosen up and rejected down independently.
fn apo_zero<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let chosen = -sigmoid(p.chosen.clone().mul_scalar(p.beta)) + 1.0;
    let rejected = sigmoid(p.rejected.clone().mul_scalar(p.beta));
    chosen + rejected
}

/// APO-down: when the model's own completions beat the chosen ones.
fn apo_down<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let chosen = sigmoid(p.chosen.clone().mul_scalar(p.beta));
    let rejected = -sigmoid(p.delta.clone().mul_scalar(p.beta)) + 1.0;
    chosen + rejected
}

/// DiscoPOP (Chris Lu et al. 2024): the logistic and exponential losses
/// mixed by `σ(βΔ / τ)`.
fn discopop<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let logits = p.delta.clone().mul_scalar(p.beta);
    let mix = sigmoid(logits.clone().div_scalar(p.discopop_tau));
    let logistic = -log_sigmoid(logits.clone());
    let exponential = (-logits).exp();
    logistic * (-mix.clone() + 1.0) + exponential * mix
}

/// Negative log-likelihood of the chosen completions: the token mean over
/// every chosen completion token of the batch, the same for each pair (TRL
/// expands one scalar). With zero tokens TRL's mean is NaN; the count is
/// clamped to 1 here instead.
fn sft<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let logps = p.logps;
    let pairs = logps.policy_chosen.dims()[0];
    let tokens = logps.chosen_tokens.clone().sum().clamp_min(1.0);
    let nll = -(logps.policy_chosen.clone().sum() / tokens);
    nll.expand([pairs])
}

/// The sigmoid loss on per-token (length-normalised) log-ratios.
fn sigmoid_norm<B: Backend>(p: &Pair<B>) -> Tensor<B, 1> {
    let (chosen, rejected) = p.per_token();
    -log_sigmoid((chosen - rejected).mul_scalar(p.beta))
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
