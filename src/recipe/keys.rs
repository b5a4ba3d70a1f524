//! Which keys a stage accepts, which it accepts with a warning, and the
//! "did you mean" suggestion for the rest.
//!
//! The known keys are read off the serialized defaults of the key groups,
//! so adding a field to a group is all it takes to accept a new key.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::Serialize;

use super::dataset::DataArgs;
use super::stage::{DpoArgs, Extensions, ModelArgs, SftArgs};
use super::training::TrainingArgs;
use super::values::StageKind;

/// Keys the handbook or TRL use that mean nothing here: accepted with one
/// warning each, then dropped.
const IGNORED: &[(&str, &str)] = &[
    ("push_to_hub", "nothing is uploaded"),
    ("hub_model_id", "nothing is uploaded"),
    ("hub_strategy", "nothing is uploaded"),
    ("hub_private_repo", "nothing is uploaded"),
    ("hub_token", "nothing is uploaded"),
    ("hub_revision", "nothing is uploaded"),
    (
        "use_flash_attention_2",
        "attention is burn's own implementation",
    ),
    (
        "attn_implementation",
        "attention is burn's own implementation",
    ),
    ("preprocessing_num_workers", "preprocessing runs in-process"),
    ("dataset_num_proc", "preprocessing runs in-process"),
    ("dataloader_num_workers", "batches are built in-process"),
    ("dataloader_pin_memory", "batches are built in-process"),
    (
        "dataloader_persistent_workers",
        "batches are built in-process",
    ),
    (
        "ddp_timeout",
        "parallelism is burn's collective, see `devices`",
    ),
    (
        "ddp_backend",
        "parallelism is burn's collective, see `devices`",
    ),
    (
        "ddp_find_unused_parameters",
        "parallelism is burn's collective, see `devices`",
    ),
    (
        "deepspeed",
        "parallelism is burn's collective, see `devices`",
    ),
    ("fsdp", "parallelism is burn's collective, see `devices`"),
    (
        "fsdp_config",
        "parallelism is burn's collective, see `devices`",
    ),
    (
        "local_rank",
        "parallelism is burn's collective, see `devices`",
    ),
    ("tf32", "matmul precision is the backend's"),
    ("torch_compile", "there is no torch here"),
    ("trust_remote_code", "only Gemma is implemented"),
    ("model_code_revision", "only Gemma is implemented"),
    (
        "use_liger_kernel",
        "the log-prob computation is already vocabulary-chunked",
    ),
    (
        "lr_scheduler_kwargs",
        "the implemented schedulers take no extra arguments",
    ),
    ("generate_during_eval", "no sampling during evaluation"),
    ("model_init_kwargs", "the model is loaded from config.json"),
    (
        "ref_model_init_kwargs",
        "the model is loaded from config.json",
    ),
    (
        "disable_tqdm",
        "progress output is set on the command line (--quiet)",
    ),
    ("use_cpu", "the device is set by `backend`"),
    ("include_tokens_per_second", "throughput is always logged"),
    ("lora_r", "LoRA is not implemented"),
    ("lora_alpha", "LoRA is not implemented"),
    ("lora_dropout", "LoRA is not implemented"),
    ("lora_target_modules", "LoRA is not implemented"),
    ("lora_modules_to_save", "LoRA is not implemented"),
    ("bnb_4bit_quant_type", "quantization is not implemented"),
    ("use_bnb_nested_quant", "quantization is not implemented"),
];

/// Keys accepted only while false: true would ask for something this
/// trainer does not do, and silently doing something else would mislead.
const UNSUPPORTED_WHEN_TRUE: &[(&str, &str)] = &[
    (
        "use_peft",
        "LoRA/PEFT is not implemented: remove it for full fine-tuning",
    ),
    ("load_in_4bit", "quantized loading is not implemented"),
    ("load_in_8bit", "quantized loading is not implemented"),
    ("fp16", "fp16 is not supported: use bf16"),
    (
        "sync_ref_model",
        "TR-DPO reference syncing is not implemented",
    ),
];

/// Older spellings, renamed to the current key before anything else.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("evaluation_strategy", "eval_strategy"),
    ("dtype", "torch_dtype"),
];

/// Keys of the chained-recipe form.
pub(crate) const CHAIN_KEYS: &[&str] = &["stages", "overrides"];

/// What the registry says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyStatus {
    Known,
    /// Accepted with this warning, then dropped.
    Ignored(&'static str),
    /// Accepted and dropped while false; an error with this reason if true.
    UnsupportedWhenTrue(&'static str),
    Unknown {
        suggestion: Option<String>,
    },
}

struct KeySets {
    all: BTreeSet<String>,
    sft: BTreeSet<String>,
    dpo: BTreeSet<String>,
}

fn key_sets() -> &'static KeySets {
    static SETS: OnceLock<KeySets> = OnceLock::new();
    SETS.get_or_init(|| {
        let sft = keys_of(&SftArgs::default());
        let dpo = keys_of(&DpoArgs::default());
        let mut all = BTreeSet::new();
        all.extend(keys_of(&ModelArgs::default()));
        all.extend(keys_of(&DataArgs::default()));
        all.extend(keys_of(&TrainingArgs::default()));
        all.extend(keys_of(&Extensions::default()));
        all.extend(sft.iter().cloned());
        all.extend(dpo.iter().cloned());
        KeySets { all, sft, dpo }
    })
}

fn keys_of<T: Serialize>(group: &T) -> BTreeSet<String> {
    let value = serde_yaml_ng::to_value(group).expect("key groups serialize to a mapping");
    value
        .as_mapping()
        .expect("key groups serialize to a mapping")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

/// Classify one top-level key of a stage.
pub(crate) fn status(key: &str) -> KeyStatus {
    if key_sets().all.contains(key) {
        return KeyStatus::Known;
    }
    if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
        return KeyStatus::Ignored(why);
    }
    if let Some((_, why)) = UNSUPPORTED_WHEN_TRUE.iter().find(|(k, _)| *k == key) {
        return KeyStatus::UnsupportedWhenTrue(why);
    }
    let candidates = key_sets()
        .all
        .iter()
        .map(String::as_str)
        .chain(IGNORED.iter().map(|(k, _)| *k))
        .chain(ALIASES.iter().map(|(k, _)| *k));
    KeyStatus::Unknown {
        suggestion: closest(key, candidates),
    }
}

/// The stage kind a key implies, if it belongs to only one objective.
pub(crate) fn kind_of(key: &str) -> Option<StageKind> {
    let sets = key_sets();
    if sets.sft.contains(key) {
        Some(StageKind::Sft)
    } else if sets.dpo.contains(key) {
        Some(StageKind::Dpo)
    } else {
        None
    }
}

/// The most similar candidate, if it is similar enough to be a typo.
pub(crate) fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::normalized_damerau_levenshtein(key, c), c))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggests_the_real_key() {
        let KeyStatus::Unknown { suggestion } = status("learnig_rate") else {
            panic!("learnig_rate should be unknown");
        };
        assert_eq!(suggestion.as_deref(), Some("learning_rate"));
    }

    #[test]
    fn groups_know_their_keys() {
        assert_eq!(status("learning_rate"), KeyStatus::Known);
        assert_eq!(kind_of("beta"), Some(StageKind::Dpo));
        assert_eq!(kind_of("max_seq_length"), Some(StageKind::Sft));
        assert_eq!(kind_of("max_length"), None);
        assert!(matches!(status("push_to_hub"), KeyStatus::Ignored(_)));
    }
}
