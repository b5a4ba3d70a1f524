//! The closed sets of values a recipe key can take, spelled as transformers,
//! TRL and the handbook spell them, so a handbook file parses unchanged.

use serde::{Deserialize, Serialize};

/// Which stage a config describes: the trainer picks the objective from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Sft,
    Dpo,
}

impl StageKind {
    /// The name used by the CLI (`align sft`, `align dpo`) and by `stages:`.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Sft => "sft",
            StageKind::Dpo => "dpo",
        }
    }

    /// "an SFT" / "a DPO", for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            StageKind::Sft => "an SFT",
            StageKind::Dpo => "a DPO",
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which software stack's behaviour to reproduce (`compat`; the README's
/// "Two stacks" table says what each governs).
///
/// Resolved once, here; the data, packing, step accounting and metric code
/// each select their variant from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compat {
    /// Today's TRL 1.x + transformers 5 (what the tiny-gemma fixture was made with).
    #[default]
    #[serde(rename = "trl-1")]
    Trl1,
    /// The March-2024 stack that trained zephyr-7b-gemma: handbook ff618a4,
    /// TRL 0.7.10, transformers 4.38.
    #[serde(rename = "trl-0.7")]
    Trl07,
}

/// transformers' `lr_scheduler_type` values that this trainer implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerType {
    #[default]
    Linear,
    Cosine,
    Constant,
    ConstantWithWarmup,
}

/// transformers' `IntervalStrategy` (`eval_strategy`, `logging_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    No,
    Steps,
    Epoch,
}

/// transformers' `SaveStrategy`; `best` needs `metric_for_best_model`, which
/// this trainer does not track, so it is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveStrategy {
    No,
    Steps,
    Epoch,
}

/// `optim`: every spelling here is torch's AdamW with decoupled weight decay,
/// which is what the handbook recipes use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    #[default]
    AdamwTorch,
    AdamwTorchFused,
    AdamwHf,
}

/// How a sequence longer than `max_length` is cut (TRL `truncation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationMode {
    /// Keep the first `max_length` tokens; rows whose prompt alone is that
    /// long are dropped (TRL 1.x default).
    KeepStart,
    /// Keep the last `max_length` tokens (TRL 0.7 default).
    KeepEnd,
}

/// transformers 5's `train_sampling_strategy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplingStrategy {
    /// A fresh seeded permutation of the rows every epoch.
    #[default]
    Random,
    /// Rows in dataset order, every epoch.
    Sequential,
}

/// `torch_dtype` (transformers 5 spells it `dtype`): the dtype of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TorchDtype {
    Auto,
    Float32,
    Bfloat16,
    Float16,
}

/// Extension key `backend`: which burn backend runs the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's CPU backend (`ndarray` and `flex` are accepted spellings).
    #[serde(alias = "ndarray", alias = "flex")]
    Cpu,
    /// burn's CUDA backend (feature `cuda`).
    Cuda,
}

/// Extension key `devices`: `all`, a list of device indices, or a string
/// such as `"0,1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    All,
    List(Vec<usize>),
}

impl Serialize for Devices {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Devices::All => serializer.serialize_str("all"),
            Devices::List(list) => list.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(usize),
            List(Vec<usize>),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::One(index) => Ok(Devices::List(vec![index])),
            Raw::List(list) => Ok(Devices::List(list)),
            Raw::Text(text) if text.trim() == "all" => Ok(Devices::All),
            Raw::Text(text) => text
                .split(',')
                .map(|part| part.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map(Devices::List)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected `all`, a list of device indices or \"0,1,...\", found {text:?}"
                    ))
                }),
        }
    }
}

/// `report_to`: a string or a list of integrations. Only `tensorboard` (and
/// `none`/`all`) mean something here; the others are warned about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportTo(pub Vec<String>);

impl ReportTo {
    /// Whether TensorBoard event files should be written.
    pub fn tensorboard(&self) -> bool {
        self.0.iter().any(|v| v == "tensorboard" || v == "all")
    }
}

impl Serialize for ReportTo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ReportTo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        Ok(match Option::<Raw>::deserialize(deserializer)? {
            None => ReportTo(Vec::new()),
            Some(Raw::One(v)) if v == "none" => ReportTo(Vec::new()),
            Some(Raw::One(v)) => ReportTo(vec![v]),
            Some(Raw::List(list)) => ReportTo(list.into_iter().filter(|v| v != "none").collect()),
        })
    }
}

/// A `*_steps` value: an integer count, or in `[0, 1)` a fraction of the
/// total number of optimizer steps (transformers' convention).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepsOrRatio(pub f64);

impl StepsOrRatio {
    /// The step count: `ceil(ratio * total)` for a ratio, as transformers.
    pub fn resolve(self, total_steps: usize) -> usize {
        if self.0 < 1.0 {
            (self.0 * total_steps as f64).ceil() as usize
        } else {
            self.0 as usize
        }
    }
}
