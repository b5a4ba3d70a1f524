//! Typed recipe: handbook config keys, extensions, validation, overrides.
//!
//! Imports nothing else of ours (`docs/architecture.md`, "Dependency rules").
//!
//! - [`load`]: [`Recipe::load`], single config files and chained recipes.
//! - [`parse`]: one stage's mapping to a [`StageConfig`] (checks, defaults).
//! - [`stage`]: [`StageConfig`] and its key groups (model, SFT, DPO, extensions).
//! - [`training`]: [`TrainingArgs`], transformers' `TrainingArguments`.
//! - [`dataset`]: [`DataArgs`], dataset mixer/mixture and the [`DataPlan`].
//! - [`values`]: the enumerated values of keys.
//! - [`keys`]: known, ignored and unknown keys ("did you mean").
//! - [`overrides`]: `--set KEY=VALUE`.
//! - [`paths`]: relative path resolution.
//! - [`resolved`]: the resolved recipe back to YAML.
//! - [`error`]: [`RecipeError`] and [`Warning`].

pub mod dataset;
pub mod error;
mod keys;
pub mod load;
pub mod overrides;
mod parse;
pub mod paths;
mod resolved;
pub mod stage;
pub mod training;
pub mod values;

pub use dataset::{
    DataArgs, DataPlan, DatasetMixer, DatasetMixture, MIXER_SEED, MixerEntry, SplitRole,
    SplitSource, split_role,
};
pub use error::{Origin, RecipeError, Warning};
pub use load::Recipe;
pub use overrides::Override;
pub use stage::{DatasetKwargs, DpoArgs, Extensions, ModelArgs, SftArgs, StageConfig};
pub use training::TrainingArgs;
pub use values::{
    BackendKind, Compat, Devices, IntervalStrategy, Optimizer, ReportTo, SamplingStrategy,
    SaveStrategy, SchedulerType, StageKind, StepsOrRatio, TorchDtype, TruncationMode,
};
