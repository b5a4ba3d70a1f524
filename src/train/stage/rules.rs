//! A stage's rules, resolved once: its stack's [`CompatRules`] and its
//! objective with the loss settings checked by that stack's own rules (a
//! `trl-0.7` stage is never checked against TRL 1.x's loss types, nor the
//! other way round), before any data is read.

use crate::recipe::{Compat, StageConfig, StageKind};
use crate::train::compat::CompatRules;
use crate::train::dpo::{DpoConfigError, DpoLossKind, DpoLossSpec};
use crate::train::trl07::loss::Trl07Loss;

use super::error::StageError;

/// The objective of a stage, with its loss settings already checked.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectiveRules {
    Dpo(DpoRules),
    Sft(SftRules),
}

/// Which stack's DPO objective.
#[derive(Clone, Debug, PartialEq)]
pub enum DpoRules {
    /// TRL 1.x: its loss types, weights and metrics.
    Trl1(DpoLossSpec),
    /// TRL 0.7.10: its loss, metrics and per-GA loss scaling.
    Trl07(Trl07Loss),
}

/// Which stack's SFT objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftRules {
    /// TRL 1.x: token NLL over the step's predicted tokens.
    Trl1,
    /// TRL 0.7.10: each micro-batch's mean loss over GA.
    Trl07,
}

/// Everything `compat` and the objective keys decide for a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRules {
    pub stack: CompatRules,
    pub objective: ObjectiveRules,
}

impl StageRules {
    /// Resolves the stage's rules, checking its loss settings by its own
    /// stack's rules before any data is read.
    pub fn for_stage(stage: &StageConfig) -> Result<Self, StageError> {
        let stack = CompatRules::for_compat(stage.ext.compat);
        let objective = match (stage.kind, stack.compat) {
            (StageKind::Dpo, Compat::Trl1) => {
                ObjectiveRules::Dpo(DpoRules::Trl1(loss_spec(stage)?))
            }
            (StageKind::Dpo, Compat::Trl07) => {
                ObjectiveRules::Dpo(DpoRules::Trl07(trl07_loss(stage)?))
            }
            (StageKind::Sft, Compat::Trl1) => ObjectiveRules::Sft(SftRules::Trl1),
            (StageKind::Sft, Compat::Trl07) => ObjectiveRules::Sft(SftRules::Trl07),
        };
        Ok(Self { stack, objective })
    }
}

/// TRL 1.16's DPO loss settings (`DPOConfig`).
fn loss_spec(stage: &StageConfig) -> Result<DpoLossSpec, StageError> {
    let loss_error = |key: &'static str| {
        move |error: DpoConfigError| StageError::Loss {
            path: stage.source.clone(),
            key,
            error,
        }
    };
    let kinds = stage
        .dpo
        .loss_type
        .iter()
        .map(|name| name.parse::<DpoLossKind>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(loss_error("loss_type"))?;
    DpoLossSpec::new(
        kinds,
        stage.dpo.loss_weights.clone(),
        stage.dpo.beta,
        stage.dpo.label_smoothing,
    )
    .map_err(loss_error("loss_type"))?
    .with_discopop_tau(stage.dpo.discopop_tau)
    .map_err(loss_error("discopop_tau"))
}

/// TRL 0.7.10's DPO loss settings (`DPOTrainer.__init__`'s `loss_type`).
fn trl07_loss(stage: &StageConfig) -> Result<Trl07Loss, StageError> {
    Trl07Loss::from_names(
        &stage.dpo.loss_type,
        stage.dpo.beta,
        stage.dpo.label_smoothing,
    )
    .map_err(|e| {
        StageError::Unsupported(format!("{}: key `loss_type`: {e}", stage.source.display()))
    })
}
