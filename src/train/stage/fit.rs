//! A stage's loop: its settings, the sinks and hooks (checkpoints,
//! interrupts) around it, continued from a checkpoint when asked.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;

use super::RunOptions;
use super::data::StageData;
use super::error::StageError;
use super::outputs::{open_sinks, record_chat_template};
use super::settings::{loop_settings, save_policy, wants_eval};
use crate::log::LogEntry;
use crate::model::gemma::Gemma;
use crate::recipe::StageConfig;
use crate::train::TrainBackend;
use crate::train::accounting::StepRules;
use crate::train::checkpoint::{Restored, load_checkpoint};
use crate::train::error::TrainError;
use crate::train::hooks::{CheckpointSetup, StageHooks};
use crate::train::interrupt;
use crate::train::objective::Objective;
use crate::train::parallel::{Replica, exchange_for};
use crate::train::precision::compute_dtype;
use crate::train::recompute::LayerRecompute;
use crate::train::resume::{self, ResumeFrom};
use crate::train::trainer::{LoopSettings, RunSummary, Trainer};

/// What a stage's loop leaves: its summary, every log event, the model.
pub(super) struct Fitted<A: AutodiffBackend> {
    pub summary: RunSummary,
    pub history: Vec<LogEntry>,
    pub model: Gemma<A>,
}

/// What a stage's loop runs in.
pub(super) struct FitPlace<'a, A: AutodiffBackend> {
    pub stage: &'a StageConfig,
    /// The step accounting of the stage's `compat`.
    pub steps: StepRules,
    pub options: &'a RunOptions,
    pub output_dir: &'a Path,
    pub tokenizer_dir: &'a Path,
    pub device: &'a A::Device,
    pub replica: &'a Replica,
}

impl<A: AutodiffBackend> FitPlace<'_, A> {
    /// Whether the stage evaluates at all, and so needs its test split.
    pub fn with_eval(&self) -> bool {
        self.options.eval_only || wants_eval(self.stage)
    }

    /// Micro-batches per optimizer step over all replicas (TRL 0.7.10's
    /// objectives divide each micro-batch loss by it).
    pub fn accumulation(&self) -> usize {
        self.stage.training.gradient_accumulation_steps * self.replica.world
    }
}

/// The loop with its sinks (`metrics.jsonl`, TensorBoard under `runs/`,
/// progress, an in-memory history) and hooks (checkpoints, interrupts);
/// continued from a checkpoint when asked.
pub(super) fn fit<A: TrainBackend, O: Objective<A>, E>(
    place: &FitPlace<'_, A>,
    objective: &mut O,
    policy: Gemma<A>,
    data: &StageData<'_, E, O::Batch>,
) -> Result<Fitted<A>, StageError> {
    let FitPlace {
        stage,
        steps,
        options,
        output_dir,
        tokenizer_dir,
        device,
        replica,
    } = *place;
    let eval = &data.eval_batches()[..];
    let micro_per_epoch = data.micro_batches_per_epoch();
    if micro_per_epoch == 0 {
        return Err(TrainError::NoData.into());
    }
    let settings = loop_settings(stage, steps, micro_per_epoch, replica.world)?;
    let restored = match resume::requested(options.resume.as_ref(), stage) {
        Some(from) if !options.eval_only => {
            restore::<A>(stage, &from, output_dir, &settings, device, replica)?
        }
        _ => None,
    };
    let past = restored
        .as_ref()
        .map(|r| r.state.log_history.clone())
        .unwrap_or_default();
    let first = restored
        .as_ref()
        .map(|r| r.state.align_loop.clone())
        .unwrap_or_default();
    let show_progress = !options.quiet;
    let (history, progress, mut sink) = open_sinks(
        output_dir,
        past,
        replica.is_primary(),
        show_progress.then_some((settings.total_steps, &first)),
    )?;
    let policy_settings = save_policy(stage, settings.total_steps);
    let mut trainer = Trainer::new(settings, objective, &mut sink);
    trainer.exchange = exchange_for(replica);
    if options.eval_only {
        trainer.evaluate(&policy, eval, 0.0, 0)?;
        return Ok(Fitted {
            summary: RunSummary::default(),
            history: history.take().0,
            model: policy,
        });
    }
    let policy = match restored {
        Some(restored) => {
            trainer.optimizer = restored.optimizer;
            trainer.state = restored.state.align_loop;
            restored.model
        }
        None => policy,
    };
    let policy = match stage.training.gradient_checkpointing {
        true => {
            let (policy, recompute) = LayerRecompute::install(policy);
            trainer.recompute = Some(recompute);
            policy
        }
        false => policy,
    };
    let finish = |dir: &Path| match &stage.data.chat_template {
        Some(template) => record_chat_template(dir, template).map_err(|e| e.to_string()),
        None => Ok(()),
    };
    let mut hooks = StageHooks {
        progress: progress.clone(),
        history: history.clone(),
        checkpoints: CheckpointSetup {
            output_dir,
            recipe_yaml: stage.to_yaml(),
            tokenizer_dir: Some(tokenizer_dir),
            finish: &finish,
            policy: policy_settings,
        },
        stop_after_step: options.stop_after_step,
        stopping: None,
    };
    interrupt::install();
    if stage.training.eval_on_start && trainer.state.step == 0 && !eval.is_empty() {
        trainer.evaluate(&policy, eval, 0.0, 0)?;
    }
    let result = match replica.is_primary() {
        true => trainer.fit_with_hooks(policy, data, eval, &mut hooks),
        false => trainer.fit_with_hooks(policy, data, eval, &mut ()),
    };
    if let (Err(_), Some(progress)) = (&result, &progress) {
        progress.borrow().clear();
    }
    let (model, summary) = result?;
    drop(trainer);
    Ok(Fitted {
        summary,
        history: history.take().0,
        model,
    })
}

/// The checkpoint to continue from, after checking that the recipe still
/// describes the same run.
fn restore<A: AutodiffBackend>(
    stage: &StageConfig,
    from: &ResumeFrom,
    output_dir: &Path,
    settings: &LoopSettings,
    device: &A::Device,
    replica: &Replica,
) -> Result<Option<Restored<A>>, StageError> {
    let Some(dir) = from.locate(output_dir)? else {
        eprintln!(
            "{}: no checkpoint yet; starting afresh",
            output_dir.display()
        );
        return Ok(None);
    };
    let shard = replica
        .shards_optimizer()
        .then_some((replica.rank, replica.world));
    let restored = load_checkpoint::<A>(&dir, settings.adamw, compute_dtype(stage), device, shard)?;
    if let Err(keys) = resume::check_same_run(&restored.recipe_yaml, &stage.to_yaml()) {
        return Err(StageError::RecipeChanged {
            checkpoint: dir,
            keys,
        });
    }
    eprintln!(
        "resuming from {} (step {})",
        dir.display(),
        restored.state.global_step
    );
    Ok(Some(restored))
}
