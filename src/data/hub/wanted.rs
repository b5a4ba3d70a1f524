//! What a recipe needs from the hub: which repos, which of their files,
//! and when a folder already holds them. Models: the JSON files at the
//! repo's root (config, tokenizer, chat template, shard index) and, unless
//! the stage starts from scratch, the safetensors weights; other formats
//! (`.bin`, `.gguf`, ONNX) are never fetched. Datasets: only the parquet
//! files of the splits the recipe reads, picked by the same rules the
//! reader uses (`source::split_paths`, the dataset card's `configs:` first),
//! and the card itself.

use std::path::Path;

use crate::recipe::{DataPlan, StageConfig};

use super::RepoKind;
use super::error::HubError;
use crate::data::source::{split_files, split_paths};

/// One repo and what of it a recipe reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoNeed {
    pub id: String,
    pub kind: RepoKind,
    pub revision: String,
    /// Models: read as a model (`config.json`), not only as a tokenizer.
    pub config: bool,
    /// Models: the weights too, not only the JSON files.
    pub weights: bool,
    /// Datasets: `(config, split)` pairs.
    pub splits: Vec<(Option<String>, String)>,
}

/// The repos `stages` read, in recipe order, one entry per repo. A model
/// that an earlier stage writes (a DPO stage starting from the SFT
/// output) is not a hub repo.
pub fn needs_of(stages: &[StageConfig]) -> Vec<RepoNeed> {
    let mut needs: Vec<RepoNeed> = Vec::new();
    let mut add = |need: RepoNeed| match needs
        .iter_mut()
        .find(|n| n.id == need.id && n.kind == need.kind)
    {
        Some(known) => {
            known.config |= need.config;
            known.weights |= need.weights;
            for split in need.splits {
                if !known.splits.contains(&split) {
                    known.splits.push(split);
                }
            }
        }
        None => needs.push(need),
    };
    let written: Vec<&str> = stages
        .iter()
        .map(|s| s.training.output_dir.as_str())
        .collect();
    for stage in stages {
        let model = &stage.model;
        // (id, read as a model, weights read)
        let mut models = vec![(&model.model_name_or_path, true, !model.init_from_scratch)];
        models.extend(
            model
                .tokenizer_name_or_path
                .as_ref()
                .map(|id| (id, false, false)),
        );
        models.extend(model.ref_model.as_ref().map(|id| (id, true, true)));
        for (id, config, weights) in models {
            if is_hub_id(id) && !written.contains(&id.as_str()) {
                add(RepoNeed {
                    id: id.clone(),
                    kind: RepoKind::Model,
                    revision: model.model_revision.clone(),
                    config,
                    weights,
                    splits: Vec::new(),
                });
            }
        }
        let sources = match stage.data.plan() {
            Ok(DataPlan::Mixer { train, test }) => [train, test].concat(),
            Ok(DataPlan::Mixture { sources, .. }) => sources,
            Err(_) => Vec::new(),
        };
        for source in sources.into_iter().filter(|s| is_hub_id(&s.id)) {
            add(RepoNeed {
                id: source.id,
                kind: RepoKind::Dataset,
                revision: "main".into(),
                config: false,
                weights: false,
                splits: vec![(source.config, source.split)],
            });
        }
    }
    needs
}

/// `name` or `org/name` as the hub spells repo ids; anything else (an
/// absolute or relative path) is a folder the user meant.
pub fn is_hub_id(id: &str) -> bool {
    let part_ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && !part.contains("..")
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| part_ok(p))
}

/// The files of `need` among the repo's `paths`, in download order;
/// `card` is a dataset's README.md, when it has one.
pub fn files_to_fetch(
    need: &RepoNeed,
    paths: &[String],
    card: Option<&str>,
) -> Result<Vec<String>, HubError> {
    match need.kind {
        RepoKind::Model => model_files(need, paths),
        RepoKind::Dataset => {
            let mut files: Vec<String> =
                card.map(|_| "README.md".to_string()).into_iter().collect();
            for (config, split) in &need.splits {
                let found = split_paths(paths, split, config.as_deref(), card);
                if found.is_empty() {
                    return Err(HubError::NoSplit {
                        id: need.id.clone(),
                        config: config.clone(),
                        split: split.clone(),
                        found: paths.to_vec(),
                    });
                }
                for file in found {
                    if !files.contains(&file) {
                        files.push(file);
                    }
                }
            }
            Ok(files)
        }
    }
}

fn model_files(need: &RepoNeed, paths: &[String]) -> Result<Vec<String>, HubError> {
    let root = |p: &&String| !p.contains('/');
    let mut files: Vec<String> = paths
        .iter()
        .filter(root)
        .filter(|p| p.ends_with(".json"))
        .cloned()
        .collect();
    if need.weights {
        let single = paths
            .iter()
            .filter(root)
            .find(|p| *p == "model.safetensors");
        let shards: Vec<String> = match single {
            Some(file) => vec![file.clone()],
            None => paths
                .iter()
                .filter(root)
                .filter(|p| is_shard(p))
                .cloned()
                .collect(),
        };
        if shards.is_empty() {
            return Err(HubError::NoWeights {
                id: need.id.clone(),
                found: paths.to_vec(),
            });
        }
        files.extend(shards);
    }
    Ok(files)
}

/// `model-00001-of-00004.safetensors`, the shards an index names.
fn is_shard(name: &str) -> bool {
    name.strip_prefix("model-")
        .and_then(|rest| rest.strip_suffix(".safetensors"))
        .is_some_and(|middle| middle.contains("-of-"))
}

/// Whether the folder `dir` already holds what `need` reads: a cache
/// snapshot that a stopped download left half filled does not.
pub fn is_complete(need: &RepoNeed, dir: &Path) -> bool {
    match need.kind {
        RepoKind::Model => {
            let has = |file: &str| dir.join(file).is_file();
            let read_as = match need.config {
                true => has("config.json"),
                false => has("tokenizer.json") || has("tokenizer_config.json"),
            };
            read_as && (!need.weights || weights_complete(dir))
        }
        RepoKind::Dataset => need
            .splits
            .iter()
            .all(|(config, split)| split_files(dir, &need.id, split, config.as_deref()).is_ok()),
    }
}

/// `model.safetensors`, or the index and every shard it names.
fn weights_complete(dir: &Path) -> bool {
    if dir.join("model.safetensors").is_file() {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return false;
    };
    let Ok(index) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
        return false;
    };
    map.values()
        .filter_map(|v| v.as_str())
        .all(|shard| dir.join(shard).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn model(weights: bool) -> RepoNeed {
        RepoNeed {
            id: "google/gemma-7b".into(),
            kind: RepoKind::Model,
            revision: "main".into(),
            config: true,
            weights,
            splits: Vec::new(),
        }
    }

    #[test]
    fn a_sharded_model_fetches_json_and_shards_but_no_other_format() {
        let paths = listed(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "gemma-7b.gguf",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer.model",
            "examples/example.json",
        ]);
        let files = files_to_fetch(&model(true), &paths, None).expect("files");
        assert_eq!(
            files,
            [
                "config.json",
                "model.safetensors.index.json",
                "tokenizer.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let config_only = files_to_fetch(&model(false), &paths, None).expect("files");
        assert_eq!(config_only.len(), 3);
        let err = files_to_fetch(
            &model(true),
            &listed(&["config.json", "pytorch_model.bin"]),
            None,
        )
        .expect_err("no safetensors");
        assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
    }

    #[test]
    fn a_dataset_fetches_only_its_splits() {
        let need = RepoNeed {
            id: "argilla/dpo-mix-7k".into(),
            kind: RepoKind::Dataset,
            revision: "main".into(),
            config: false,
            weights: false,
            splits: vec![(None, "train".into())],
        };
        let paths = listed(&[
            "README.md",
            "data/train-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet",
        ]);
        assert_eq!(
            files_to_fetch(&need, &paths, None).expect("files"),
            ["data/train-00000-of-00001.parquet"]
        );
        let mut missing = need.clone();
        missing.splits = vec![(None, "train_prefs".into())];
        let err = files_to_fetch(&missing, &paths, None).expect_err("no such split");
        assert!(err.to_string().contains("split `train_prefs`"), "{err}");
    }

    #[test]
    fn hub_ids_are_told_from_paths() {
        for id in ["google/gemma-7b", "gpt2", "HuggingFaceH4/deita-10k-v0-sft"] {
            assert!(is_hub_id(id), "{id}");
        }
        for id in ["/abs/model", "./model", "a/b/c", "../x", "", "org/"] {
            assert!(!is_hub_id(id), "{id}");
        }
    }
}
