//! `align train|sft|dpo --dry-run`: resolve a recipe and describe the run
//! without running it: per stage the model (from its `config.json` only),
//! tokenizer and datasets found or missing (and where they were sought),
//! step accounting, and a per-device memory estimate with a verdict.
//!
//! A plan is made even when weights, tokenizer or data are absent (that is
//! the point of planning before downloading 17 GB): what is missing is part
//! of the plan, not an error.
//!
//! Imports `recipe`, `data`, `model` and `train` (like `train`, a consumer
//! of every layer below it), and nothing imports it but `main.rs`.
//!
//! - [`lookup`]: model `config.json`, weights, tokenizer.
//! - [`datasets`]: split files, row counts, examples after preparation.
//! - [`steps`]: micro-batches, optimizer steps, warmup, effective batch.
//! - [`devices`]: `--devices`, device count and memory.
//! - [`memory`]: the per-device memory formula.
//! - [`report`]: the plan as text.
//! - [`error`]: what stops a plan ([`PlanError`]).

pub mod datasets;
pub mod devices;
pub mod error;
pub mod lookup;
pub mod memory;
pub mod report;
pub mod steps;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use devices::{DeviceKind, DeviceRequest, DeviceSet};
pub use error::PlanError;
pub use memory::{ComputeDtype, MemoryEstimate, MemoryParts};

use crate::model::gemma::GemmaConfig;
use crate::recipe::{Compat, Recipe, StageConfig, StageKind, TorchDtype};
use datasets::{DataSummary, ExampleCount, count_examples, plan_datasets};
use lookup::{FileLookup, ModelPlan, plan_model, plan_tokenizer};
use memory::{ActivationParts, ModelShape, Setup, Workload};
use steps::{StepPlan, TrainCount, plan_steps};

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanRequest<'a> {
    pub path: &'a Path,
    /// `--set KEY=VALUE`.
    pub overrides: &'a [String],
    /// `align sft`/`align dpo`: read the config as that stage kind.
    pub kind: Option<StageKind>,
    pub devices: DeviceRequest,
    /// No progress messages on stderr.
    pub quiet: bool,
}

/// The whole plan: `--format json` prints it as one object.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub recipe: PathBuf,
    pub chained: bool,
    pub stages: Vec<StagePlan>,
    /// The largest stage's per-device total (stages run one after another).
    pub per_device_memory_bytes: Option<u64>,
    /// Its parts.
    pub per_device_memory_parts: Option<MemoryParts>,
    pub device_memory_bytes: Option<u64>,
    /// Whether every stage fits its devices (`None`: some estimate is unknown).
    pub fits: Option<bool>,
    /// Everything missing, each with where it was sought.
    pub missing: Vec<String>,
    /// Recipe keys accepted but ignored.
    pub warnings: Vec<String>,
}

/// One stage of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct StagePlan {
    /// 1-based, as the trainer's messages count stages.
    pub index: usize,
    pub kind: StageKind,
    pub source: PathBuf,
    pub compat: Compat,
    pub output_dir: String,
    pub devices: DeviceSet,
    pub model: ModelPlan,
    pub tokenizer: FileLookup,
    pub data: DataSummary,
    pub train_examples: Option<ExampleCount>,
    pub steps: StepPlan,
    pub memory: Option<MemoryPlan>,
    pub missing: Vec<String>,
}

/// The memory estimate of a stage and its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPlan {
    pub dtype: ComputeDtype,
    /// Devices sharing the optimizer state (ZeRO-1).
    pub optimizer_shards: u64,
    pub gradient_checkpointing: bool,
    pub reference_model_in_memory: bool,
    pub workload: Workload,
    pub parts: MemoryParts,
    pub activations: ActivationParts,
    pub per_device_memory_bytes: u64,
    pub device_memory_bytes: Option<u64>,
    pub fits: Option<bool>,
    pub notes: Vec<String>,
}

/// Resolve `request.path` and plan each of its stages.
pub fn make_plan(request: &PlanRequest<'_>) -> Result<Plan, PlanError> {
    let recipe = Recipe::load_as(request.path, request.overrides, request.kind)?;
    let stages = (0..recipe.stages.len())
        .map(|index| plan_stage(&recipe.stages, index, request))
        .collect::<Result<Vec<_>, _>>()?;
    let largest = stages
        .iter()
        .filter_map(|s| s.memory.as_ref())
        .max_by_key(|m| m.per_device_memory_bytes);
    let all_known = stages
        .iter()
        .all(|s| s.memory.as_ref().is_some_and(|m| m.fits.is_some()));
    let fits = all_known.then(|| {
        stages
            .iter()
            .all(|s| s.memory.as_ref().and_then(|m| m.fits) == Some(true))
    });
    let missing = stages
        .iter()
        .flat_map(|s| {
            s.missing
                .iter()
                .map(move |m| format!("stage {} ({}): {m}", s.index, s.kind))
        })
        .collect();
    Ok(Plan {
        recipe: recipe.path.clone(),
        chained: recipe.chained,
        per_device_memory_bytes: largest.map(|m| m.per_device_memory_bytes),
        per_device_memory_parts: largest.map(|m| m.parts),
        device_memory_bytes: largest.and_then(|m| m.device_memory_bytes),
        fits,
        missing,
        warnings: recipe.warnings.iter().map(ToString::to_string).collect(),
        stages,
    })
}

fn plan_stage(
    stages: &[StageConfig],
    index: usize,
    request: &PlanRequest<'_>,
) -> Result<StagePlan, PlanError> {
    let stage = &stages[index];
    let devices = request.devices.resolve(stage)?;
    let model = plan_model(stages, index);
    let tokenizer = plan_tokenizer(stage);
    let data = plan_datasets(stage);
    let mut missing = model.missing.clone();
    if tokenizer.path.is_none() {
        missing.push(tokenizer.missing_text("tokenizer.json"));
    }
    missing.extend(data.problem.iter().cloned());
    missing.extend(data.datasets.iter().filter_map(|d| d.missing_text()));
    let mut steps_note = None;
    let train_examples = match (&tokenizer.path, data.train_rows) {
        (Some(_), Some(_)) => {
            if !request.quiet {
                eprintln!(
                    "stage {} ({}): tokenizing the train split to count its examples",
                    index + 1,
                    stage.kind
                );
            }
            count_examples(stage)
                .map_err(|e| steps_note = Some(format!("examples not counted: {e}")))
                .ok()
        }
        _ => None,
    };
    let count = train_count(stage, train_examples, data.train_rows, &mut steps_note);
    let mut steps = plan_steps(
        &stage.training,
        stage.ext.compat,
        devices.count as u64,
        count,
    );
    steps.note = steps_note;
    let memory = model
        .config
        .as_ref()
        .map(|config| plan_memory(stage, config, &devices));
    Ok(StagePlan {
        index: index + 1,
        kind: stage.kind,
        source: stage.source.clone(),
        compat: stage.ext.compat,
        output_dir: stage.training.output_dir.clone(),
        devices,
        model,
        tokenizer,
        data,
        train_examples,
        steps,
        memory,
        missing,
    })
}

/// What the step count is made of: the prepared examples when counted, else
/// the rows (exact for TRL 0.7 DPO, which drops none; an upper bound for
/// TRL 1.x, which drops over-long prompts), never rows for packed SFT.
fn train_count(
    stage: &StageConfig,
    examples: Option<ExampleCount>,
    rows: Option<u64>,
    note: &mut Option<String>,
) -> Option<TrainCount> {
    if let Some(examples) = examples {
        return Some(TrainCount {
            count: examples.examples,
            unit: "examples",
        });
    }
    let packed =
        stage.kind == StageKind::Sft && (stage.sft.packing || stage.ext.compat == Compat::Trl07);
    match rows {
        Some(_) if packed => {
            note.get_or_insert_with(|| {
                "packed SFT: the number of packed sequences needs the tokenizer".into()
            });
            None
        }
        Some(count) => {
            note.get_or_insert_with(|| {
                "counted from dataset rows, before TRL's preparation (the tokenizer is missing)"
                    .into()
            });
            Some(TrainCount {
                count,
                unit: "rows",
            })
        }
        None => {
            note.get_or_insert_with(|| "unknown until the train data is present".into());
            None
        }
    }
}

/// bf16 when the recipe asks for it (`bf16: true`, `torch_dtype:
/// bfloat16`), fp32 otherwise, whatever the device: the rule the run
/// itself follows (`train::precision::compute_dtype`; transformers also
/// trains in fp32 unless told otherwise).
fn compute_dtype(stage: &StageConfig) -> ComputeDtype {
    if stage.training.bf16 == Some(true) || stage.model.torch_dtype == Some(TorchDtype::Bfloat16) {
        ComputeDtype::Bf16
    } else {
        ComputeDtype::Fp32
    }
}

fn plan_memory(stage: &StageConfig, config: &GemmaConfig, devices: &DeviceSet) -> MemoryPlan {
    let mut notes = Vec::new();
    let seq = stage.max_length().unwrap_or_else(|| {
        notes.push(format!(
            "no max_length: sequences of max_position_embeddings ({}) tokens assumed",
            config.max_position_embeddings
        ));
        config.max_position_embeddings
    });
    let per_device = stage.training.per_device_train_batch_size as u64;
    let rows = match stage.kind {
        StageKind::Dpo => 2 * per_device,
        StageKind::Sft => per_device,
    };
    let reference = stage.kind == StageKind::Dpo && !stage.dpo.precompute_ref_log_probs;
    let setup = Setup {
        dtype: compute_dtype(stage),
        shards: match stage.ext.shard_optimizer_state {
            true => devices.count as u64,
            false => 1,
        },
        accumulation: stage.training.gradient_accumulation_steps as u64,
        checkpointing: stage.training.gradient_checkpointing,
        reference,
        runtime_bytes: match devices.kind {
            DeviceKind::Cuda => memory::CUDA_RUNTIME_BYTES,
            DeviceKind::Cpu => 0,
        },
    };
    let workload = Workload {
        rows,
        seq: seq as u64,
    };
    let estimate = memory::estimate(&ModelShape::from_config(config), &workload, &setup);
    let total = estimate.per_device_memory_bytes;
    MemoryPlan {
        dtype: setup.dtype,
        optimizer_shards: setup.shards,
        gradient_checkpointing: setup.checkpointing,
        reference_model_in_memory: reference,
        workload,
        parts: estimate.parts,
        activations: estimate.activations,
        per_device_memory_bytes: total,
        device_memory_bytes: devices.memory_bytes,
        fits: devices.memory_bytes.map(|capacity| total <= capacity),
        notes,
    }
}
