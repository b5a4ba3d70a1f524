//! The DPO loss types by TRL's names, and their settings checked once,
//! before any work starts (TRL 1.16 `DPOConfig.__post_init__`).

use std::fmt;
use std::str::FromStr;

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
