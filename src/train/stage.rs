//! One stage of a recipe, end to end: prepare the data, load (or
//! initialise) the model, build the objective, run the loop, save the model
//! in Hugging Face format with the resolved recipe. This is where the
//! recipe's keys become the loop's settings, once.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::accounting::EpochBatches;
use super::accounting::StepRules;
use super::adamw::AdamWConfig;
use super::checkpoint::{CheckpointError, Restored, load_checkpoint};
use super::dpo::{DpoConfigError, DpoLossKind, DpoLossSpec};
use super::error::TrainError;
use super::hooks::{CheckpointSetup, SavePolicy, StageHooks};
use super::interrupt;
use super::logps::ScoredBatch;
use super::objective::Objective;
use super::parallel::Replica;
use super::parallel::exchange_for;
use super::precision::compute_dtype;
use super::preference::{DpoObjective, PreferenceBatch, Reference};
use super::recompute::LayerRecompute;
use super::reference::{PrecomputeSettings, ReferenceLogps, precompute, weights_fingerprint};
use super::resume::{self, ResumeFrom};
use super::schedule::{Schedule, ScheduleKind};
use super::sft::SftObjective;
use super::trainer::{LoopSettings, RunSummary, Trainer};
use super::trl07::loss::Trl07Loss;
use super::trl07::preference::Trl07DpoObjective;
use super::trl07::sft::Trl07SftObjective;
use crate::data::{
    DataError, DpoBatch, DpoExample, IGNORE_INDEX, Message, Preprocessor, RepoKind, SftBatch,
    SftExample, epoch_order, micro_batches, prepare_dpo, prepare_sft, resolve,
};
use crate::log::jsonl::JsonlSink;
use crate::log::progress::Progress;
use crate::log::tensorboard::TensorboardSink;
use crate::log::{Fanout, History, LogEntry, MetricsSink, Shared};
use crate::model::gemma::{ActivationRule, Gemma, GemmaConfig, RandomInit};
use crate::model::hf::{HfError, load_gemma_with_rule, save_gemma};
use crate::recipe::{
    Compat, DataPlan, IntervalStrategy, SchedulerType, SplitRole, StageConfig, StageKind,
    TrainingArgs,
};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{path}: key `{key}`: {error}")]
    Loss {
        path: PathBuf,
        key: &'static str,
        error: DpoConfigError,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Starting, coordinating or stopping the replicas of a data-parallel run.
    #[error("{0}")]
    Parallel(String),
    /// A replica of a data-parallel run failed with this error.
    #[error("device {device}: {error}")]
    Device {
        device: String,
        error: Box<StageError>,
    },
    #[error(
        "{checkpoint}: the recipe changed since this checkpoint, so resuming would not continue the same run: {}. Restore those values, or start afresh without --resume",
        keys.join("; ")
    )]
    RecipeChanged {
        checkpoint: PathBuf,
        keys: Vec<String>,
    },
}

impl StageError {
    /// An error that only follows another replica's failure.
    pub fn is_secondary(&self) -> bool {
        matches!(self, StageError::Train(error) if error.is_secondary())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |error| StageError::Io {
        path: path.to_path_buf(),
        error,
    }
}

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
pub fn run_stage<A: AutodiffBackend>(
    stage: &StageConfig,
    options: &RunOptions,
    device: &A::Device,
) -> Result<StageOutcome, StageError> {
    run_stage_replica::<A>(stage, options, device, &Replica::single())
}

/// Runs `stage` as one replica of a data-parallel run: all of it (data,
/// model, loop) as on one device, but only rank 0 logs, writes
/// checkpoints and saves the model.
pub fn run_stage_replica<A: AutodiffBackend>(
    stage: &StageConfig,
    options: &RunOptions,
    device: &A::Device,
    replica: &Replica,
) -> Result<StageOutcome, StageError> {
    if stage.kind == StageKind::Dpo {
        loss_spec(stage)?;
    }
    let pre = Preprocessor::from_stage(stage)?;
    let output_dir = PathBuf::from(&stage.training.output_dir);
    std::fs::create_dir_all(&output_dir).map_err(io_error(&output_dir))?;
    let policy = load_policy::<A>(stage, device)?;
    let with_eval = options.eval_only || wants_eval(stage);
    let tokenizer_dir = pre.tokenizer_dir();
    let place = FitPlace {
        stage,
        options,
        output_dir: &output_dir,
        tokenizer_dir: &tokenizer_dir,
        device,
        replica,
    };
    let mut sample = None;
    let (summary, history, model) = match stage.kind {
        StageKind::Dpo => {
            let train = prepare_dpo(stage, &pre, SplitRole::Train)?.examples();
            let eval = match with_eval {
                true => prepare_dpo(stage, &pre, SplitRole::Test)?.examples(),
                false => Vec::new(),
            };
            sample = eval.first().and_then(sample_prompt);
            let collate = |examples: &[DpoExample], indices: &[usize]| {
                let picked: Vec<&DpoExample> = indices.iter().map(|&i| &examples[i]).collect();
                let (pad, max_length, truncation) =
                    (pre.pad_token_id, pre.max_length, pre.truncation);
                preference_batch(&DpoBatch::collate(
                    &picked, indices, pad, max_length, truncation,
                ))
            };
            let reference = reference_model::<A>(stage, &policy, device)?;
            let (reference, tables) = if stage.dpo.precompute_ref_log_probs {
                let train_scored = |i: &[usize]| collate(&train, i);
                let eval_scored = |i: &[usize]| collate(&eval, i);
                let tables = precompute_reference(
                    stage,
                    options,
                    &reference,
                    [(&train[..], &train_scored), (&eval[..], &eval_scored)],
                    &output_dir,
                    device,
                )?;
                // Freed before training: the point of precomputing.
                drop(reference);
                (Reference::Precomputed, Some(tables))
            } else {
                (Reference::Model(Box::new(reference)), None)
            };
            let attach = |split: usize| {
                let tables = tables.as_ref();
                let examples = [&train, &eval][split];
                move |_: &[&DpoExample], indices: &[usize]| {
                    let mut batch = collate(examples, indices);
                    batch.reference_logps = tables.map(|t| t[split].for_pairs(indices));
                    batch
                }
            };
            let (train_collate, eval_collate) = (attach(0), attach(1));
            let mut objective = DpoObjective {
                spec: loss_spec(stage)?,
                reference,
                device: device.clone(),
            };
            let data = StageData::new(stage, &train, &eval, &train_collate, &eval_collate);
            match stage.ext.compat {
                Compat::Trl1 => fit(&place, &mut objective, policy, &data)?,
                Compat::Trl07 => {
                    let mut objective = trl07_dpo_objective(stage, objective, replica.world)?;
                    fit(&place, &mut objective, policy, &data)?
                }
            }
        }
        StageKind::Sft => {
            let train = prepare_sft(stage, &pre, SplitRole::Train)?.examples();
            let eval = match with_eval {
                true => prepare_sft(stage, &pre, SplitRole::Test)?.examples(),
                false => Vec::new(),
            };
            let collate = |picked: &[&SftExample], indices: &[usize]| {
                sft_batch(&SftBatch::collate(picked, indices, pre.pad_token_id))
            };
            let data = StageData::new(stage, &train, &eval, &collate, &collate);
            match stage.ext.compat {
                Compat::Trl1 => {
                    let mut objective = SftObjective::<A> {
                        device: device.clone(),
                    };
                    fit(&place, &mut objective, policy, &data)?
                }
                Compat::Trl07 => {
                    let mut objective = Trl07SftObjective::<A> {
                        device: device.clone(),
                        accumulation: stage.training.gradient_accumulation_steps * replica.world,
                    };
                    fit(&place, &mut objective, policy, &data)?
                }
            }
        }
    };
    if options.eval_only || !replica.is_primary() {
        return Ok(StageOutcome {
            output_dir,
            summary,
            history,
            sample,
        });
    }
    save_gemma(&model.valid(), &output_dir, Some(&tokenizer_dir))?;
    if let Some(template) = &stage.data.chat_template {
        record_chat_template(&output_dir, template)?;
    }
    let recipe_path = output_dir.join("recipe.yaml");
    std::fs::write(&recipe_path, stage.to_yaml()).map_err(io_error(&recipe_path))?;
    Ok(StageOutcome {
        output_dir,
        summary,
        history,
        sample,
    })
}

fn sample_prompt(example: &DpoExample) -> Option<SamplePrompt> {
    let messages = example.messages.as_ref()?;
    Some(SamplePrompt {
        prompt: messages.prompt.clone(),
        chosen: messages.chosen.last()?.content.clone(),
    })
}

/// A recipe's `chat_template` wins over the tokenizer's: write it into the
/// saved `tokenizer_config.json` so the next stage and inference use it.
fn record_chat_template(output_dir: &Path, template: &str) -> Result<(), StageError> {
    let path = output_dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| StageError::Io {
            path: path.clone(),
            error: e.into(),
        })?,
        Err(_) => serde_json::json!({}),
    };
    config["chat_template"] = template.into();
    let text = serde_json::to_string_pretty(&config).expect("JSON value serializes");
    std::fs::write(&path, text + "\n").map_err(io_error(&path))
}

/// What a stage's loop runs in.
struct FitPlace<'a, A: AutodiffBackend> {
    stage: &'a StageConfig,
    options: &'a RunOptions,
    output_dir: &'a Path,
    tokenizer_dir: &'a Path,
    device: &'a A::Device,
    replica: &'a Replica,
}

/// The loop with its sinks (`metrics.jsonl`, TensorBoard under `runs/`,
/// progress, an in-memory history) and hooks (checkpoints, interrupts);
/// continued from a checkpoint when asked.
fn fit<A: AutodiffBackend, O: Objective<A>, E>(
    place: &FitPlace<'_, A>,
    objective: &mut O,
    policy: Gemma<A>,
    data: &StageData<'_, E, O::Batch>,
) -> Result<(RunSummary, Vec<LogEntry>, Gemma<A>), StageError> {
    let FitPlace {
        stage,
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
    let settings = loop_settings(stage, micro_per_epoch, replica.world)?;
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
    let history = Rc::new(RefCell::new(History(past)));
    let mut sinks: Vec<Box<dyn MetricsSink>> = vec![Box::new(Shared(history.clone()))];
    if replica.is_primary() {
        let metrics_path = output_dir.join("metrics.jsonl");
        write_history(&metrics_path, &history.borrow().0)?;
        let runs = output_dir.join("runs");
        sinks.push(Box::new(
            JsonlSink::append(&metrics_path).map_err(io_error(&metrics_path))?,
        ));
        sinks.push(Box::new(
            TensorboardSink::create(&runs).map_err(io_error(&runs))?,
        ));
    }
    let first = restored
        .as_ref()
        .map(|r| r.state.align_loop.clone())
        .unwrap_or_default();
    let progress = (!options.quiet).then(|| {
        Rc::new(RefCell::new(Progress::new(
            settings.total_steps,
            first.step,
            first.num_tokens,
        )))
    });
    if let Some(progress) = &progress {
        sinks.push(Box::new(Shared(progress.clone())));
    }
    let mut sink = Fanout(sinks);
    let policy_settings = save_policy(stage, settings.total_steps);
    let mut trainer = Trainer::new(settings, objective, &mut sink);
    trainer.exchange = exchange_for(replica);
    if options.eval_only {
        trainer.evaluate(&policy, eval, 0.0, 0)?;
        return Ok((RunSummary::default(), history.take().0, policy));
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
    Ok((summary, history.take().0, model))
}

/// `save_strategy`, `save_steps` and `save_total_limit`.
fn save_policy(stage: &StageConfig, total_steps: usize) -> SavePolicy {
    let t = &stage.training;
    SavePolicy {
        strategy: t.save_strategy,
        every: t.save_steps.resolve(total_steps).max(1),
        total_limit: t.save_total_limit,
    }
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

/// `metrics.jsonl` as it was at the checkpoint (empty for a fresh run).
fn write_history(path: &Path, entries: &[LogEntry]) -> Result<(), StageError> {
    let mut text = String::new();
    for entry in entries {
        text += &serde_json::Value::Object(entry.clone()).to_string();
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io_error(path))
}

/// A stage's prepared examples and how they become micro-batches: the
/// sampler's order per epoch for training, sequential for evaluation.
struct StageData<'a, E, Batch> {
    training: &'a TrainingArgs,
    train: &'a [E],
    eval: &'a [E],
    train_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
    eval_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
}

impl<'a, E, Batch> StageData<'a, E, Batch> {
    fn new(
        stage: &'a StageConfig,
        train: &'a [E],
        eval: &'a [E],
        train_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
        eval_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
    ) -> Self {
        Self {
            training: &stage.training,
            train,
            eval,
            train_collate,
            eval_collate,
        }
    }

    fn batches(
        examples: &[E],
        collate: &dyn Fn(&[&E], &[usize]) -> Batch,
        index_batches: Vec<Vec<usize>>,
    ) -> Vec<Batch> {
        index_batches
            .iter()
            .map(|indices| {
                let picked: Vec<&E> = indices.iter().map(|&i| &examples[i]).collect();
                collate(&picked, indices)
            })
            .collect()
    }

    /// Micro-batches in one training epoch, counted on indices (no collation).
    fn micro_batches_per_epoch(&self) -> usize {
        let t = self.training;
        let order: Vec<usize> = (0..self.train.len()).collect();
        micro_batches(
            &order,
            t.per_device_train_batch_size,
            t.dataloader_drop_last,
        )
        .len()
    }

    fn eval_batches(&self) -> Vec<Batch> {
        let order: Vec<usize> = (0..self.eval.len()).collect();
        let batch_size = self.training.per_device_eval_batch_size;
        Self::batches(
            self.eval,
            self.eval_collate,
            micro_batches(&order, batch_size, false),
        )
    }
}

impl<E, Batch> EpochBatches<Batch> for StageData<'_, E, Batch> {
    fn epoch(&self, index: usize) -> Vec<Batch> {
        let t = self.training;
        let seed = t.data_seed.unwrap_or(t.seed);
        let order = epoch_order(self.train.len(), t.train_sampling_strategy, seed, index);
        let batches = micro_batches(
            &order,
            t.per_device_train_batch_size,
            t.dataloader_drop_last,
        );
        Self::batches(self.train, self.train_collate, batches)
    }
}

/// The loop's settings from the recipe's transformers keys, for `devices`
/// replicas: a step is `gradient_accumulation_steps x devices` micro-batches
/// (transformers' effective batch), so an epoch of `M` micro-batches has
/// `ceil(M / (GA x devices))` steps, which is transformers' per-process
/// `ceil(ceil(M / devices) / GA)`.
pub fn loop_settings(
    stage: &StageConfig,
    micro_per_epoch: usize,
    devices: usize,
) -> Result<LoopSettings, StageError> {
    let accumulation = stage.training.gradient_accumulation_steps.max(1) * devices.max(1);
    let t = &TrainingArgs {
        gradient_accumulation_steps: accumulation,
        ..stage.training.clone()
    };
    let rules = StepRules::for_compat(stage.ext.compat);
    let total_steps = rules.total_steps(t, micro_per_epoch);
    let kind = match t.lr_scheduler_type {
        SchedulerType::Linear => ScheduleKind::Linear,
        SchedulerType::Cosine => ScheduleKind::Cosine,
        SchedulerType::Constant => ScheduleKind::Constant,
        SchedulerType::ConstantWithWarmup => ScheduleKind::ConstantWithWarmup,
    };
    Ok(LoopSettings {
        total_steps,
        accumulation,
        schedule: Schedule {
            kind,
            peak_lr: t.learning_rate,
            warmup_steps: t.warmup_steps_for(total_steps),
            total_steps,
        },
        adamw: AdamWConfig {
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_epsilon,
            weight_decay: t.weight_decay,
        },
        max_grad_norm: t.max_grad_norm,
        logging_steps: t.logging_steps.resolve(total_steps).max(1),
        logging_first_step: t.logging_first_step,
        rules,
        eval_every: (t.eval_strategy == IntervalStrategy::Steps)
            .then(|| t.eval_interval(total_steps)),
        eval_each_epoch: t.eval_strategy == IntervalStrategy::Epoch,
        // The handbook's scripts call `trainer.evaluate()` after training when `do_eval`.
        eval_at_end: t.do_eval,
    })
}

/// Whether the stage evaluates at all, and so needs its test split.
fn wants_eval(stage: &StageConfig) -> bool {
    let has_test = match stage.data.plan() {
        Ok(DataPlan::Mixer { test, .. }) => !test.is_empty(),
        Ok(DataPlan::Mixture {
            test_split_size, ..
        }) => test_split_size.is_some_and(|s| s > 0.0),
        Err(_) => false,
    };
    has_test && (stage.training.do_eval || stage.training.eval_strategy != IntervalStrategy::No)
}

/// The policy: the checkpoint at `model_name_or_path`, or (with
/// `init_from_scratch`) transformers' random initialisation of its config.
fn load_policy<A: AutodiffBackend>(
    stage: &StageConfig,
    device: &A::Device,
) -> Result<Gemma<A>, StageError> {
    let dir = resolve(&stage.model.model_name_or_path, RepoKind::Model)?;
    let dtype = compute_dtype(stage);
    let rule = activation_rule(stage);
    if !stage.model.init_from_scratch {
        return Ok(load_gemma_with_rule::<A>(&dir, dtype, rule, device)?);
    }
    let config =
        GemmaConfig::from_file_with_rule(&dir.join("config.json"), rule).map_err(HfError::from)?;
    let std = config
        .raw
        .get("initializer_range")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.02);
    // The backend's generator is global: replicas initialising at once
    // would interleave their draws. One at a time, each draws the weights
    // of a single-device run.
    static ONE_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_init = ONE_INIT.lock().unwrap_or_else(|p| p.into_inner());
    A::seed(device, stage.training.seed);
    let mut init = RandomInit::<A> {
        std,
        dtype,
        device: device.clone(),
    };
    let Ok(model) = Gemma::from_source(config, &mut init);
    Ok(model)
}

/// How `config.json` picks the MLP activation: transformers 4.38.2 (the
/// `trl-0.7` stack) reads `hidden_act`, so gemma-7b's `"gelu"` is the exact
/// erf GELU; later releases read `hidden_activation` (tanh by default).
fn activation_rule(stage: &StageConfig) -> ActivationRule {
    match stage.ext.compat {
        Compat::Trl1 => ActivationRule::Modern,
        Compat::Trl07 => ActivationRule::Transformers438,
    }
}

/// TRL 0.7.10's DPO objective over the stage's reference model.
fn trl07_dpo_objective<A: AutodiffBackend>(
    stage: &StageConfig,
    base: DpoObjective<A>,
    devices: usize,
) -> Result<Trl07DpoObjective<A>, StageError> {
    let loss = Trl07Loss::from_names(
        &stage.dpo.loss_type,
        stage.dpo.beta,
        stage.dpo.label_smoothing,
    )
    .map_err(|e| {
        StageError::Unsupported(format!("{}: key `loss_type`: {e}", stage.source.display()))
    })?;
    Ok(Trl07DpoObjective {
        base,
        loss,
        // transformers 4.38 divides by GA and DDP averages over devices.
        accumulation: stage.training.gradient_accumulation_steps * devices,
    })
}

/// The DPO loss settings, checked before any data is read.
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

/// The frozen reference: `ref_model` when given, else a copy of the
/// initial policy, on the inner backend (no graph, no gradients) and in the
/// compute dtype: bf16 weights under `bf16: true`, so it holds `2·P` bytes,
/// the `reference model` line of the `--dry-run` plan. `policy.valid()`
/// shares the initial weights' buffers, which the optimizer's first step
/// stops sharing. With `precompute_ref_log_probs` it is dropped after the
/// scoring pass, before training starts.
fn reference_model<A: AutodiffBackend>(
    stage: &StageConfig,
    policy: &Gemma<A>,
    device: &A::Device,
) -> Result<Gemma<A::InnerBackend>, StageError> {
    Ok(match &stage.model.ref_model {
        Some(path) => {
            let dir = resolve(path, RepoKind::Model)?;
            load_gemma_with_rule::<A::InnerBackend>(
                &dir,
                compute_dtype(stage),
                activation_rule(stage),
                device,
            )?
        }
        None => policy.valid(),
    })
}

/// A split's examples and how to collate the ones at some indices.
type ScoredSplit<'a, E> = (&'a [E], &'a dyn Fn(&[usize]) -> PreferenceBatch);

/// Scores the train and eval splits with the reference once (or reads them
/// from `output_dir/ref_logps/`), as TRL's `precompute_ref_log_probs`: batch
/// size `precompute_ref_batch_size`, else the per-device train/eval size.
fn precompute_reference<B: burn::tensor::backend::Backend, E>(
    stage: &StageConfig,
    options: &RunOptions,
    reference: &Gemma<B>,
    splits: [ScoredSplit<'_, E>; 2],
    output_dir: &Path,
    device: &B::Device,
) -> Result<[ReferenceLogps; 2], StageError> {
    let t = &stage.training;
    let weights = weights_fingerprint(reference);
    let cache_dir = output_dir.join("ref_logps");
    let sizes = [t.per_device_train_batch_size, t.per_device_eval_batch_size];
    let names = ["train", "eval"];
    let mut tables = Vec::with_capacity(2);
    for ((examples, collate), (split, default_size)) in
        splits.into_iter().zip(names.into_iter().zip(sizes))
    {
        let settings = PrecomputeSettings {
            cache_dir: &cache_dir,
            split,
            batch_size: stage.dpo.precompute_ref_batch_size.unwrap_or(default_size),
            quiet: options.quiet,
        };
        let table = precompute(
            reference,
            weights,
            examples.len(),
            collate,
            &settings,
            device,
        )
        .map_err(io_error(&cache_dir))?;
        tables.push(table);
    }
    Ok(tables.try_into().expect("two splits"))
}

fn preference_batch(batch: &DpoBatch) -> PreferenceBatch {
    PreferenceBatch {
        pairs: batch.pairs,
        sequences: ScoredBatch {
            rows: 2 * batch.pairs,
            width: batch.seq_len,
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            scored: batch.completion_mask.iter().map(|&m| m != 0).collect(),
            positions: None,
        },
        reference_logps: None,
    }
}

/// Labels are unshifted (label t is read from logits t−1): position 0 is
/// never predicted.
fn sft_batch(batch: &SftBatch) -> ScoredBatch {
    let width = batch.seq_len;
    ScoredBatch {
        rows: batch.rows,
        width,
        input_ids: batch.input_ids.clone(),
        attention_mask: batch.attention_mask.clone(),
        scored: batch
            .labels
            .iter()
            .enumerate()
            .map(|(i, &label)| i % width.max(1) != 0 && label != IGNORE_INDEX)
            .collect(),
        positions: batch.positions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain, cpu_device};
    use crate::recipe::Recipe;
    use burn::tensor::DType;

    fn fixture_stage(overrides: &[&str]) -> StageConfig {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma/recipe_dpo.yaml");
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let recipe = Recipe::load_as(&path, &overrides, Some(StageKind::Dpo)).unwrap();
        recipe.stages.into_iter().next().unwrap()
    }

    /// The reference is a `Gemma<Cpu>` (the inner backend: no autodiff, so
    /// no graph and no gradients, by type) holding bf16 weights under
    /// `bf16: true`, fp32 otherwise; with `ref_model` too.
    #[test]
    fn the_reference_is_held_in_the_compute_dtype_without_autodiff() {
        let device = cpu_device();
        for (overrides, dtype) in [
            (vec!["bf16=true"], DType::BF16),
            (vec!["bf16=true", "ref_model=model_b"], DType::BF16),
            (vec![], DType::F32),
        ] {
            let stage = fixture_stage(&overrides);
            let policy = load_policy::<CpuTrain>(&stage, &device).unwrap();
            assert_eq!(policy.dtype(), dtype, "{overrides:?}");
            let reference: Gemma<Cpu> = reference_model(&stage, &policy, &device).unwrap();
            assert_eq!(reference.dtype(), dtype, "{overrides:?}");
        }
    }
}
