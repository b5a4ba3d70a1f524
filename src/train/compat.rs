//! What the recipe's `compat` decides on the training side, resolved once
//! into one value that every consumer reads: the loop's step rules and the
//! model's GELU (`train::stage` and `plan` both read [`CompatRules`]; the
//! stage's objective is chosen beside it, in `train::stage::rules`). The
//! data side's rules are chosen once too, in `data::prepare`, where the
//! tokenizer is at hand.

use crate::model::gemma::ActivationRule;
use crate::recipe::Compat;
use crate::train::accounting::StepRules;

/// The stack-wide rules of a `compat` value, needing no stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompatRules {
    pub compat: Compat,
    /// Steps per epoch and what is logged (transformers 5 or 4.38).
    pub steps: StepRules,
    /// How `config.json` picks the MLP activation: transformers 4.38.2 (the
    /// `trl-0.7` stack) reads `hidden_act`, so gemma-7b's `"gelu"` is the
    /// exact erf GELU; later releases read `hidden_activation` (tanh by
    /// default).
    pub activation: ActivationRule,
}

impl CompatRules {
    pub fn for_compat(compat: Compat) -> Self {
        let (steps, activation) = match compat {
            Compat::Trl1 => (StepRules::Transformers5, ActivationRule::Modern),
            Compat::Trl07 => (StepRules::Transformers438, ActivationRule::Transformers438),
        };
        Self {
            compat,
            steps,
            activation,
        }
    }
}
