//! [`PlanError`]: what stops a plan from being made at all. Anything the
//! plan can describe instead (a missing model, tokenizer or dataset) is not
//! an error: it is reported in the plan, with where it was looked for.

use crate::recipe::RecipeError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{0}")]
    Devices(String),
}
