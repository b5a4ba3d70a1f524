//! One training stage (SFT or DPO) as the trainer consumes it: the
//! handbook's model, data and training keys, TRL's objective keys, and this
//! project's extension keys, each group with its own struct.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::dataset::DataArgs;
use super::training::TrainingArgs;
use super::values::{BackendKind, Compat, Devices, StageKind, TorchDtype, TruncationMode};

/// A fully resolved stage: defaults applied, overrides applied, relative
/// paths resolved (see `paths.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub kind: StageKind,
    /// The file the stage was read from (the chained recipe for inline stages).
    pub source: PathBuf,
    pub model: ModelArgs,
    pub data: DataArgs,
    pub training: TrainingArgs,
    /// Meaningful only when `kind` is `Sft`.
    pub sft: SftArgs,
    /// Meaningful only when `kind` is `Dpo`.
    pub dpo: DpoArgs,
    pub ext: Extensions,
}

/// The handbook's "Model arguments".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelArgs {
    /// A local folder or a hub id (looked up locally, else downloaded into the HF cache).
    pub model_name_or_path: String,
    pub model_revision: String,
    /// Tokenizer folder or id; `None`: the model's.
    pub tokenizer_name_or_path: Option<String>,
    /// Extension: the frozen DPO reference; `None`: a second copy of the
    /// initial policy (what the handbook does).
    pub ref_model: Option<String>,
    /// Also read from transformers 5's spelling `dtype`.
    pub torch_dtype: Option<TorchDtype>,
    /// Extension: start from random weights (config.json's
    /// `initializer_range`) instead of loading `model.safetensors`.
    pub init_from_scratch: bool,
}

impl Default for ModelArgs {
    fn default() -> Self {
        ModelArgs {
            model_name_or_path: String::new(),
            model_revision: "main".into(),
            tokenizer_name_or_path: None,
            ref_model: None,
            torch_dtype: None,
            init_from_scratch: false,
        }
    }
}

impl ModelArgs {
    /// Where the tokenizer files are: `tokenizer_name_or_path`, else the model.
    pub fn tokenizer_source(&self) -> &str {
        self.tokenizer_name_or_path
            .as_deref()
            .unwrap_or(&self.model_name_or_path)
    }
}

/// TRL `SFTConfig` keys (and the handbook's `max_seq_length`, folded into
/// `DataArgs::max_length` when the stage is read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SftArgs {
    pub packing: bool,
    pub max_seq_length: Option<usize>,
    pub dataset_kwargs: Option<DatasetKwargs>,
    pub dataset_text_field: String,
    /// `None`: TRL's default (completion-only for prompt/completion data).
    pub completion_only_loss: Option<bool>,
    pub assistant_only_loss: bool,
    pub eos_token: Option<String>,
}

impl Default for SftArgs {
    fn default() -> Self {
        SftArgs {
            packing: false,
            max_seq_length: None,
            dataset_kwargs: None,
            dataset_text_field: "text".into(),
            completion_only_loss: None,
            assistant_only_loss: false,
            eos_token: None,
        }
    }
}

/// The handbook SFT recipes' `dataset_kwargs` (TRL 0.7 `SFTTrainer` options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetKwargs {
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(default)]
    pub append_concat_token: Option<bool>,
}

/// TRL `DPOConfig` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpoArgs {
    pub beta: f64,
    /// TRL's loss names (`sigmoid`, `ipo`, ...), one or a list; checked
    /// against the loss types when the stage starts (`train::dpo`).
    #[serde(deserialize_with = "one_or_list")]
    pub loss_type: Vec<String>,
    /// TRL 1.x: one weight per loss type of a list (default 1 each).
    pub loss_weights: Option<Vec<f64>>,
    pub label_smoothing: f64,
    /// τ of the `discopop` loss (TRL's default 0.05, the DiscoPOP paper's).
    pub discopop_tau: f64,
    /// Not a TRL 1.x parameter (removed in v0.29): recorded, used by trl-0.7.
    pub max_prompt_length: Option<usize>,
    pub max_completion_length: Option<usize>,
    pub truncation_mode: TruncationMode,
    pub precompute_ref_log_probs: bool,
    /// `None`: `per_device_train_batch_size` (TRL).
    pub precompute_ref_batch_size: Option<usize>,
    pub disable_dropout: bool,
}

impl Default for DpoArgs {
    fn default() -> Self {
        DpoArgs {
            beta: 0.1,
            loss_type: vec!["sigmoid".to_string()],
            loss_weights: None,
            label_smoothing: 0.0,
            discopop_tau: 0.05,
            max_prompt_length: None,
            max_completion_length: None,
            truncation_mode: TruncationMode::KeepStart,
            precompute_ref_log_probs: false,
            precompute_ref_batch_size: None,
            disable_dropout: true,
        }
    }
}

/// Extension keys, beyond the handbook's and TRL's, that no handbook file has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Extensions {
    pub compat: Compat,
    /// Whether the mixer shuffles rows (the handbook always does, seeded).
    pub dataset_shuffle: bool,
    /// trl-0.7 SFT: whether the packed sequences of each buffer are shuffled
    /// (TRL 0.7.10 always did, with Python's global RNG; here a seeded
    /// permutation). `false` keeps stream order.
    pub packing_shuffle: bool,
    /// `None`: CUDA when built with it and a device is present, else CPU.
    pub backend: Option<BackendKind>,
    /// `None`: every visible device of the backend.
    pub devices: Option<Devices>,
    /// ZeRO-1 with several devices: each keeps the AdamW state (fp32
    /// moments and masters) of its share of the parameters. The update is
    /// bit for bit the unsharded one; `false` keeps all of it everywhere.
    pub shard_optimizer_state: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            compat: Compat::Trl1,
            dataset_shuffle: true,
            packing_shuffle: true,
            backend: None,
            devices: None,
            shard_optimizer_state: true,
        }
    }
}

/// TRL 1.x takes `loss_type` as one name or a list (a weighted sum of losses).
fn one_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        List(Vec<String>),
    }
    match Raw::deserialize(deserializer) {
        Ok(Raw::One(name)) => Ok(vec![name]),
        Ok(Raw::List(names)) if !names.is_empty() => Ok(names),
        Ok(Raw::List(_)) => Err(serde::de::Error::custom("an empty list of loss types")),
        Err(_) => Err(serde::de::Error::custom(
            "expected a loss type name (sigmoid, ipo, ...) or a list of them",
        )),
    }
}

impl StageConfig {
    /// Maximum tokens per sequence, `None` for no truncation.
    pub fn max_length(&self) -> Option<usize> {
        self.data.max_length
    }

    /// The folder relative paths of this stage's file were resolved against.
    pub fn config_dir(&self) -> PathBuf {
        match self.source.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}
