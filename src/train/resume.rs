//! Which checkpoint a run continues from, and whether the recipe still
//! describes the same run. A resumed run must be the uninterrupted run: a
//! changed model, dataset, batch shape, seed or optimizer key would silently
//! make it another one, so those refuse; keys that only change what is
//! logged, evaluated or saved are allowed.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::checkpoint::{CheckpointError, latest_checkpoint};
use crate::recipe::StageConfig;

/// `--resume` (the newest checkpoint) or a given folder.
#[derive(Clone, Debug, PartialEq)]
pub enum ResumeFrom {
    Latest,
    Path(PathBuf),
}

impl ResumeFrom {
    /// The recipe's `resume_from_checkpoint` (a path, or `true` for the
    /// newest, as transformers accepts).
    pub fn from_recipe(value: &str) -> Self {
        match value.trim() {
            "true" | "True" => ResumeFrom::Latest,
            path => ResumeFrom::Path(PathBuf::from(path)),
        }
    }

    /// The checkpoint folder in `output_dir` this designates; `None` when
    /// the newest is asked for and there is none yet (a stage of a chain
    /// that had not started: it starts afresh).
    pub fn locate(&self, output_dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
        match self {
            ResumeFrom::Latest => match latest_checkpoint(output_dir) {
                Ok(dir) => Ok(Some(dir)),
                Err(CheckpointError::NoCheckpoint { .. }) => Ok(None),
                Err(other) => Err(other),
            },
            ResumeFrom::Path(path) if path.is_dir() => Ok(Some(path.clone())),
            ResumeFrom::Path(path) => Err(CheckpointError::File {
                path: path.clone(),
                message: "no such checkpoint folder".into(),
            }),
        }
    }
}

/// The flag wins over the recipe key.
pub fn requested(flag: Option<&ResumeFrom>, stage: &StageConfig) -> Option<ResumeFrom> {
    flag.cloned().or_else(|| {
        stage
            .training
            .resume_from_checkpoint
            .as_deref()
            .map(ResumeFrom::from_recipe)
    })
}

/// Keys a resumed run may change: where and how often it logs, evaluates
/// and saves, and how it is resumed.
const HARMLESS: &[&str] = &[
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "do_eval",
    "eval_strategy",
    "eval_steps",
    "per_device_eval_batch_size",
    "logging_strategy",
    "logging_steps",
    "logging_first_step",
    "logging_dir",
    "log_level",
    "report_to",
    "run_name",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "save_only_model",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_private_repo",
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "backend",
];

/// The keys whose values differ between the checkpoint's recipe and the
/// current one, harmless keys aside; `Err` lists them as `key: old -> new`.
pub fn check_same_run(saved_yaml: &str, current_yaml: &str) -> Result<(), Vec<String>> {
    let saved = flatten(&serde_yaml_ng::from_str(saved_yaml).unwrap_or(Value::Null));
    let current = flatten(&serde_yaml_ng::from_str(current_yaml).unwrap_or(Value::Null));
    let mut keys: Vec<&String> = saved.iter().chain(&current).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let lookup = |pairs: &[(String, String)], key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| "(unset)".to_string(), |(_, v)| v.clone())
    };
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|key| !HARMLESS.contains(&top_level(key)))
        .filter_map(|key| {
            let (old, new) = (lookup(&saved, key), lookup(&current, key));
            (old != new).then(|| format!("{key}: {old} -> {new}"))
        })
        .collect();
    match differing.is_empty() {
        true => Ok(()),
        false => Err(differing),
    }
}

fn top_level(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// Nested mappings as dotted keys; other values as their YAML text.
fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten_into("", value, &mut out);
    out
}

fn flatten_into(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Mapping(map) => {
            for (key, inner) in map {
                let key = match key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap_or_default(),
                };
                let key = key.trim();
                let path = match prefix.is_empty() {
                    true => key.to_string(),
                    false => format!("{prefix}.{key}"),
                };
                flatten_into(&path, inner, out);
            }
        }
        other => {
            let text = serde_yaml_ng::to_string(other).unwrap_or_default();
            out.push((prefix.to_string(), text.trim().replace('\n', " ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_changes_pass_and_others_are_named() {
        let saved = "learning_rate: 0.001\nlogging_steps: 1\ndataset_mixer:\n  a: 1.0\n";
        let harmless = "learning_rate: 0.001\nlogging_steps: 10\ndataset_mixer:\n  a: 1.0\n";
        assert_eq!(check_same_run(saved, harmless), Ok(()));
        let changed = "learning_rate: 0.002\nlogging_steps: 1\ndataset_mixer:\n  b: 1.0\n";
        assert_eq!(
            check_same_run(saved, changed),
            Err(vec![
                "dataset_mixer.a: 1.0 -> (unset)".to_string(),
                "dataset_mixer.b: (unset) -> 1.0".to_string(),
                "learning_rate: 0.001 -> 0.002".to_string(),
            ])
        );
    }
}
