//! One stage of a recipe, end to end, as a short program: resolve the
//! stage's rules, load the tokenizer and the policy, fit the objective,
//! save the model in Hugging Face format with the resolved recipe.
//!
//! - `rules`: what `compat` and the objective keys decide, once;
//! - `settings`: the recipe's transformers keys as the loop's settings;
//! - `data`: prepared examples as the loop's micro-batches;
//! - `models`: the policy, the frozen reference, precomputed log-probs;
//! - `objectives`: each objective's data, models and loop;
//! - `fit`: the loop with its sinks, hooks and resume;
//! - `outputs`: metrics sinks and the saved model;
//! - `error`: [`StageError`].

pub mod data;
pub mod error;
pub mod fit;
pub mod models;
pub mod objectives;
pub mod outputs;
pub mod rules;
pub mod settings;

use std::path::PathBuf;

pub use error::StageError;
use error::io_error;
use fit::FitPlace;
use models::load_policy;
use objectives::{fit_dpo, fit_sft};
use outputs::save_model;
pub use rules::{ObjectiveRules, StageRules};
pub use settings::loop_settings;

use crate::data::{Message, Preprocessor};
use crate::log::LogEntry;
use crate::recipe::StageConfig;
use crate::train::TrainBackend;
use crate::train::parallel::Replica;
use crate::train::resume::ResumeFrom;
use crate::train::trainer::RunSummary;

/// What a finished stage leaves behind.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub output_dir: PathBuf,
    pub summary: RunSummary,
    /// Every log event of the run (also in `metrics.jsonl`).
    pub history: Vec<LogEntry>,
    /// A held-out prompt and its preferred answer, for the end-of-run sample.
    pub sample: Option<SamplePrompt>,
}

/// The first eval pair's prompt and chosen answer (DPO stages).
#[derive(Debug, Clone)]
pub struct SamplePrompt {
    pub prompt: Vec<Message>,
    pub chosen: String,
}

/// Options of a run that are not recipe keys.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress lines on stderr.
    pub quiet: bool,
    /// `align eval`: evaluate the model as it is on the test split; no
    /// training, nothing saved but `metrics.jsonl`.
    pub eval_only: bool,
    /// `--resume` / `--resume-from` (the recipe's `resume_from_checkpoint` otherwise).
    pub resume: Option<ResumeFrom>,
    /// Test hook: act as if Ctrl-C came during this optimizer step.
    pub stop_after_step: Option<usize>,
}

/// Runs `stage` on the autodiff backend `A` at `device`.
pub fn run_stage<A: TrainBackend>(
    stage: &StageConfig,
    options: &RunOptions,
    device: &A::Device,
) -> Result<StageOutcome, StageError> {
    run_stage_replica::<A>(stage, options, device, &Replica::single())
}

/// Runs `stage` as one replica of a data-parallel run: all of it (data,
/// model, loop) as on one device, but only rank 0 logs, writes
/// checkpoints and saves the model.
pub fn run_stage_replica<A: TrainBackend>(
    stage: &StageConfig,
    options: &RunOptions,
    device: &A::Device,
    replica: &Replica,
) -> Result<StageOutcome, StageError> {
    let rules = StageRules::for_stage(stage)?;
    let pre = Preprocessor::from_stage(stage)?;
    let output_dir = PathBuf::from(&stage.training.output_dir);
    std::fs::create_dir_all(&output_dir).map_err(io_error(&output_dir))?;
    let policy = load_policy::<A>(stage, rules.stack.activation, device)?;
    let tokenizer_dir = pre.tokenizer_dir();
    let place = FitPlace {
        stage,
        steps: rules.stack.steps,
        options,
        output_dir: &output_dir,
        tokenizer_dir: &tokenizer_dir,
        device,
        replica,
    };
    let (fitted, sample) = match rules.objective {
        ObjectiveRules::Dpo(dpo) => fit_dpo(&place, &pre, dpo, rules.stack.activation, policy)?,
        ObjectiveRules::Sft(sft) => (fit_sft(&place, &pre, sft, policy)?, None),
    };
    if !options.eval_only && replica.is_primary() {
        save_model(stage, &fitted.model, &output_dir, &tokenizer_dir)?;
    }
    Ok(StageOutcome {
        output_dir,
        summary: fitted.summary,
        history: fitted.history,
        sample,
    })
}
