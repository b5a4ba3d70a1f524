//! Checkpoints: `output_dir/checkpoint-STEP/` holds the weights in Hugging
//! Face format (transformers loads the folder as is), the AdamW state
//! (`optimizer.safetensors`: moments by parameter name, step count in the
//! metadata), `trainer_state.json` (transformers' fields plus the loop's
//! exact position) and the resolved recipe.
//!
//! A checkpoint is written into a hidden `.checkpoint-STEP.partial/` folder,
//! every file fsynced, then renamed: a crash mid-write leaves no folder that
//! resume would take. Resume checks every file before using any.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::adamw::{AdamW, AdamWConfig, Moments};
use super::parallel::{OptimizerShards, OptimizerView};
use super::trainer::LoopState;
use crate::log::LogEntry;
use crate::model::gemma::Gemma;
use crate::model::hf::{
    HfError, load_gemma, parameter_ids, read_safetensors, save_gemma, write_pending,
};

pub const TRAINER_STATE: &str = "trainer_state.json";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const RECIPE: &str = "recipe.yaml";

/// Every file resume needs (the tokenizer files are copied but optional).
pub const REQUIRED_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    OPTIMIZER,
    TRAINER_STATE,
    RECIPE,
];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] HfError),
    #[error("{dir}: no checkpoint-STEP folder to resume from")]
    NoCheckpoint { dir: PathBuf },
}

fn file_error(path: &Path, message: impl ToString) -> CheckpointError {
    CheckpointError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// `trainer_state.json`: transformers' keys (so its tools read it) and the
/// loop's own position under `align_loop`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    pub epoch: f64,
    pub max_steps: usize,
    pub log_history: Vec<LogEntry>,
    pub best_metric: Option<f64>,
    pub best_model_checkpoint: Option<String>,
    pub align_loop: LoopState,
}

/// What a checkpoint holds besides the loop's state.
pub struct CheckpointContents<'a, A: AutodiffBackend> {
    pub model: &'a Gemma<A>,
    pub optimizer: OptimizerView<'a, A::InnerBackend>,
    pub state: TrainerState,
    pub recipe_yaml: &'a str,
    /// Copied with the weights, so the folder is self-contained.
    pub tokenizer_dir: Option<&'a Path>,
    /// Extra step on the finished folder (the recipe's chat template).
    pub finish: &'a dyn Fn(&Path) -> Result<(), String>,
}

/// Writes `output_dir/checkpoint-STEP/` atomically and keeps at most
/// `total_limit` checkpoints (oldest removed first). Returns its path.
pub fn save_checkpoint<A: AutodiffBackend>(
    output_dir: &Path,
    contents: CheckpointContents<'_, A>,
    total_limit: Option<usize>,
) -> Result<PathBuf, CheckpointError> {
    let step = contents.state.global_step;
    let dir = output_dir.join(format!("checkpoint-{step}"));
    let partial = output_dir.join(format!(".checkpoint-{step}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| file_error(&partial, e))?;
    }
    save_gemma(&contents.model.valid(), &partial, contents.tokenizer_dir)?;
    (contents.finish)(&partial).map_err(|e| file_error(&partial, e))?;
    save_optimizer(
        contents.model,
        &contents.optimizer,
        &partial.join(OPTIMIZER),
    )?;
    let state = serde_json::to_string_pretty(&contents.state).expect("trainer state serializes");
    write(&partial.join(TRAINER_STATE), state.as_bytes())?;
    write(&partial.join(RECIPE), contents.recipe_yaml.as_bytes())?;
    sync_folder_files(&partial)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
    }
    std::fs::rename(&partial, &dir).map_err(|e| file_error(&dir, e))?;
    sync_dir(output_dir)?;
    if let Some(limit) = total_limit {
        rotate(output_dir, limit.max(1))?;
    }
    Ok(dir)
}

/// The checkpoints in `output_dir`, oldest first.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let step = path
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            path.is_dir().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// The newest checkpoint in `output_dir` (`--resume`).
pub fn latest_checkpoint(output_dir: &Path) -> Result<PathBuf, CheckpointError> {
    list_checkpoints(output_dir)
        .pop()
        .map(|(_, path)| path)
        .ok_or_else(|| CheckpointError::NoCheckpoint {
            dir: output_dir.to_path_buf(),
        })
}

fn rotate(output_dir: &Path, limit: usize) -> Result<(), CheckpointError> {
    let all = list_checkpoints(output_dir);
    let excess = all.len().saturating_sub(limit);
    for (_, path) in &all[..excess] {
        std::fs::remove_dir_all(path).map_err(|e| file_error(path, e))?;
    }
    Ok(())
}

/// A checkpoint read back: the policy, the optimizer, the state and the
/// recipe it was written with.
pub struct Restored<A: AutodiffBackend> {
    pub model: Gemma<A>,
    pub optimizer: AdamW<A::InnerBackend>,
    pub state: TrainerState,
    pub recipe_yaml: String,
}

/// Reads `dir`, checking that every required file is there and whole.
/// With `shard = Some((rank, world))` (a sharded optimizer), only the
/// optimizer state of this replica's parameters is loaded.
pub fn load_checkpoint<A: AutodiffBackend>(
    dir: &Path,
    adamw: AdamWConfig,
    dtype: DType,
    device: &A::Device,
    shard: Option<(usize, usize)>,
) -> Result<Restored<A>, CheckpointError> {
    for name in REQUIRED_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(file_error(
                &path,
                "missing: the checkpoint is incomplete; pass an earlier one with --resume-from",
            ));
        }
    }
    let state_path = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| file_error(&state_path, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| file_error(&state_path, format!("unreadable ({e}): truncated?")))?;
    let recipe_path = dir.join(RECIPE);
    let recipe_yaml =
        std::fs::read_to_string(&recipe_path).map_err(|e| file_error(&recipe_path, e))?;
    let model = load_gemma::<A>(dir, dtype, device)?;
    let shards = shard.map(|(rank, world)| OptimizerShards::partition(&model, rank, world));
    let keep = |id| shards.as_ref().is_none_or(|shards| shards.owns(id));
    let optimizer = load_optimizer(&model, adamw, &dir.join(OPTIMIZER), device, keep)?;
    Ok(Restored {
        model,
        optimizer,
        state,
        recipe_yaml,
    })
}

/// Moments as `<parameter>.exp_avg` / `<parameter>.exp_avg_sq` (fp32,
/// flattened), the fp32 master weights of a bf16 model as
/// `<parameter>.master` (the bf16 `model.safetensors` alone would lose the
/// low bits of every update), and the step count in the metadata.
fn save_optimizer<A: AutodiffBackend>(
    model: &Gemma<A>,
    optimizer: &OptimizerView<'_, A::InnerBackend>,
    path: &Path,
) -> Result<(), CheckpointError> {
    let step = optimizer.step().ok_or_else(|| {
        file_error(
            path,
            "the sharded optimizer state was not gathered before writing (a bug)",
        )
    })?;
    let mut tensors = Vec::new();
    for (name, id) in parameter_ids(model) {
        if let Some([exp_avg, exp_avg_sq]) = optimizer.moments(id) {
            tensors.push((format!("{name}.exp_avg"), exp_avg));
            tensors.push((format!("{name}.exp_avg_sq"), exp_avg_sq));
        }
        if let Some(master) = optimizer.master(id) {
            tensors.push((format!("{name}.master"), master));
        }
    }
    let metadata = HashMap::from([
        ("format".to_string(), "align-adamw".to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    write_pending(path, tensors, metadata)?;
    Ok(())
}

fn load_optimizer<A: AutodiffBackend>(
    model: &Gemma<A>,
    config: AdamWConfig,
    path: &Path,
    device: &A::Device,
    keep: impl Fn(ParamId) -> bool,
) -> Result<AdamW<A::InnerBackend>, CheckpointError> {
    let (metadata, mut tensors) = read_safetensors(path)?;
    let step = metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| file_error(path, "no `step` in the metadata"))?;
    let mut optimizer = AdamW::new(config);
    optimizer.step = step;
    for (name, id) in parameter_ids(model) {
        // Another replica's share is checked for presence, not loaded.
        let mine = keep(id);
        let mut take = |suffix: &str| tensors.remove(&format!("{name}.{suffix}"));
        let to_device = |data| moment::<A::InnerBackend>(data, device);
        match (take("exp_avg"), take("exp_avg_sq")) {
            (Some(exp_avg), Some(exp_avg_sq)) if mine => {
                optimizer.moments.insert(
                    id,
                    Moments {
                        exp_avg: to_device(exp_avg),
                        exp_avg_sq: to_device(exp_avg_sq),
                    },
                );
            }
            (Some(_), Some(_)) => {}
            (None, None) if step == 0 => {}
            _ => return Err(file_error(path, format!("no moments for {name}"))),
        }
        if let Some(master) = take("master").filter(|_| mine) {
            optimizer.masters.insert(id, to_device(master));
        }
    }
    Ok(optimizer)
}

/// Moments are saved flattened, as [`AdamW`] keeps them, in fp32.
fn moment<B: Backend>(data: TensorData, device: &B::Device) -> Tensor<B, 1> {
    let len = data.num_elements();
    Tensor::<B, 1>::from_data(data.convert::<f32>(), device).reshape([len])
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    std::fs::write(path, bytes).map_err(|e| file_error(path, e))
}

fn sync_folder_files(dir: &Path) -> Result<(), CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| file_error(dir, e))?.path();
        let file = std::fs::File::open(&path).map_err(|e| file_error(&path, e))?;
        file.sync_all().map_err(|e| file_error(&path, e))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    let handle = std::fs::File::open(dir).map_err(|e| file_error(dir, e))?;
    handle.sync_all().map_err(|e| file_error(dir, e))
}
