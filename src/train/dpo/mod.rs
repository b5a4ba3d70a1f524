//! The DPO loss family of TRL 1.16.0 (`trl/trainer/dpo_trainer.py`,
//! `DPOTrainer._compute_loss`; options from `trl/trainer/dpo_config.py`), as
//! pure tensor functions of the summed completion log-probs of each pair.
//!
//! - `loss`: [`dpo_loss`], the sigmoid loss first, then each variant;
//! - `spec`: the loss types by TRL's names and the checked settings.
//!
//! Why pure functions of log-probs: every TRL loss type is a function of the
//! four per-pair sums (policy/reference × chosen/rejected), plus the completion
//! token counts for the length-normalised ones (`ipo`, `sigmoid_norm`, `sft`).
//! The forward passes that produce those sums live in `train::logps`; keeping
//! the loss apart lets it be tested number for number against TRL's own code
//! (`scripts/trl_loss_values.py` writes
//! `tests/fixtures/trl-dpo-losses/cases.json`, which [`tests`] reads).
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
//!   of TRL 0.x's BCO pair loss was removed, so no loss carries state between
//!   micro-batches.
//! * Every loss type except `sft` needs the reference log-probs; TRL 1.16 has
//!   no reference-free mode.
//!
//! Not modelled (they change the inputs, not this module's formulas, or are
//! off by default): `f_divergence_type` other than `reverse_kl`, WPO
//! `use_weighting`, `ld_alpha` (it changes how the log-prob sums are formed).

pub mod loss;
pub mod spec;
#[cfg(test)]
mod tests;

pub use loss::{DpoOutput, PairLogps, dpo_loss};
pub use spec::{DEFAULT_DISCOPOP_TAU, DpoConfigError, DpoLossKind, DpoLossSpec};
