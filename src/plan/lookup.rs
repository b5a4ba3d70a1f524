//! Finding a stage's model files without loading them: `config.json` for
//! the shapes, the weights' presence, `tokenizer.json`. Ids resolve as the
//! trainer resolves them (`data::resolve`: a folder, `ALIGN_DATA_DIR/<id>`,
//! the Hugging Face cache at `refs/main`); a cache copied without its
//! `refs/` folder is also read, from its `snapshots/*/`, since a dry run
//! only wants the shapes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::{DataError, RepoKind, resolve};
use crate::model::gemma::GemmaConfig;
use crate::recipe::{StageConfig, StageKind};
use crate::train::compat::CompatRules;

/// Published fine-tunes whose `config.json` is their base model's (same
/// architecture and sizes), so that a handbook config naming the fine-tune
/// can be planned from the base's `config.json` alone: the zephyr-7b-gemma
/// DPO config starts from the published SFT model, a fine-tune of gemma-7b.
const KNOWN_BASES: &[(&str, &str)] = &[
    ("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", "google/gemma-7b"),
    ("HuggingFaceH4/zephyr-7b-gemma-v0.1", "google/gemma-7b"),
];

/// Weight files a model folder may hold.
const WEIGHT_FILES: &[&str] = &["model.safetensors", "model.safetensors.index.json"];

/// One file of a repo id, found or not.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileLookup {
    pub id: String,
    /// The file, when found.
    pub path: Option<PathBuf>,
    /// Where it was sought, when not found.
    pub looked_in: Vec<PathBuf>,
}

impl FileLookup {
    /// "FILE of `ID` (looked in A, B)" for the list of what is missing.
    pub fn missing_text(&self, file: &str) -> String {
        let places: Vec<String> = self
            .looked_in
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("{file} of `{}` (looked in {})", self.id, places.join(", "))
    }
}

/// Any of `files` in the folder of repo `id`.
pub fn find_file(id: &str, files: &[&str]) -> FileLookup {
    let found = |dir: &Path| files.iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let (path, looked_in) = match resolve(id, RepoKind::Model) {
        Ok(dir) => match found(&dir) {
            Some(path) => (Some(path), Vec::new()),
            None => (None, vec![dir]),
        },
        Err(DataError::NotFound { tried, .. }) => {
            let snapshot = tried.last().and_then(|repo| any_snapshot(repo, &found));
            let looked_in = tried
                .iter()
                .enumerate()
                .map(|(i, p)| match i + 1 == tried.len() {
                    true => p.join("snapshots").join("*"),
                    false => p.clone(),
                })
                .collect();
            (
                snapshot.clone(),
                if snapshot.is_some() {
                    Vec::new()
                } else {
                    looked_in
                },
            )
        }
        Err(_) => (None, vec![PathBuf::from(id)]),
    };
    FileLookup {
        id: id.to_string(),
        path,
        looked_in,
    }
}

/// The first `snapshots/*/` of a hub cache repo folder holding the file.
fn any_snapshot(repo: &Path, found: &dyn Fn(&Path) -> Option<PathBuf>) -> Option<PathBuf> {
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(repo.join("snapshots"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    snapshots.sort();
    snapshots.iter().find_map(|dir| found(dir))
}

/// The stage's model as far as a plan needs it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelPlan {
    pub id: String,
    /// The `config.json` the shapes were read from.
    pub config_json: Option<PathBuf>,
    /// Why the shapes come from another model's `config.json`, if they do.
    pub shapes_from: Option<String>,
    pub parameters: Option<u64>,
    pub weights: Option<PathBuf>,
    /// Where the weights are, or why none are needed, or what is missing.
    pub weights_status: String,
    /// Missing files and unreadable configs.
    pub missing: Vec<String>,
    #[serde(skip)]
    pub config: Option<GemmaConfig>,
}

/// The model of `stages[index]`: a DPO stage chained after an SFT stage
/// starts from the SFT output, which a dry run before training cannot read,
/// so it is planned with the SFT stage's model.
pub fn plan_model(stages: &[StageConfig], index: usize) -> ModelPlan {
    let stage = &stages[index];
    let rule = CompatRules::for_compat(stage.ext.compat).activation;
    let id = &stage.model.model_name_or_path;
    let previous_sft = stages[..index]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| s.kind == StageKind::Sft && &s.training.output_dir == id);
    if stage.kind == StageKind::Dpo
        && let Some((sft_index, sft)) = previous_sft
        && !Path::new(id).join("config.json").is_file()
    {
        let mut plan = plan_model(stages, sft_index);
        plan.id = id.clone();
        plan.shapes_from = Some(format!(
            "the output of stage {} (sft), not written yet: the shapes of its model `{}`",
            sft_index + 1,
            sft.model.model_name_or_path
        ));
        plan.weights = None;
        plan.weights_status = format!("written by stage {} (sft)", sft_index + 1);
        plan.missing.retain(|m| !m.starts_with("weights"));
        return plan;
    }
    let own = find_file(id, &["config.json"]);
    let mut missing = Vec::new();
    let (config_lookup, shapes_from) = match (&own.path, base_of(id)) {
        (None, Some(base)) => {
            missing.push(own.missing_text("config.json"));
            let note = format!("its base model `{base}` (a fine-tune keeps its base's shapes)");
            (find_file(base, &["config.json"]), Some(note))
        }
        _ => (own, None),
    };
    let config = match &config_lookup.path {
        Some(path) => match GemmaConfig::from_file_with_rule(path, rule) {
            Ok(config) => Some(config),
            Err(e) => {
                missing.push(format!("a usable config.json: {e}"));
                None
            }
        },
        None => {
            missing.push(config_lookup.missing_text("config.json"));
            None
        }
    };
    let (weights, weights_status) = weights(stage, &mut missing);
    ModelPlan {
        id: id.clone(),
        config_json: config_lookup.path.clone(),
        shapes_from: config.as_ref().and(shapes_from),
        parameters: config.as_ref().map(|c| c.num_parameters() as u64),
        weights,
        weights_status,
        missing,
        config,
    }
}

fn base_of(id: &str) -> Option<&'static str> {
    KNOWN_BASES
        .iter()
        .find(|(tuned, _)| *tuned == id)
        .map(|(_, base)| *base)
}

fn weights(stage: &StageConfig, missing: &mut Vec<String>) -> (Option<PathBuf>, String) {
    if stage.model.init_from_scratch {
        return (None, "not needed (init_from_scratch)".into());
    }
    let lookup = find_file(&stage.model.model_name_or_path, WEIGHT_FILES);
    match lookup.path {
        Some(path) => {
            let status = format!("found: {}", path.display());
            (Some(path), status)
        }
        None => {
            let text = lookup.missing_text("weights (model.safetensors)");
            missing.push(text.clone());
            (None, format!("missing: {text}"))
        }
    }
}

/// The stage's `tokenizer.json` (`tokenizer_name_or_path`, else the model's).
pub fn plan_tokenizer(stage: &StageConfig) -> FileLookup {
    find_file(stage.model.tokenizer_source(), &["tokenizer.json"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_without_refs_is_still_found() {
        let cache = tempfile::tempdir().expect("tempdir");
        let snapshot = cache.path().join("models--org--m/snapshots/x");
        std::fs::create_dir_all(&snapshot).expect("mkdir");
        std::fs::write(snapshot.join("config.json"), "{}").expect("write");
        let found = any_snapshot(&cache.path().join("models--org--m"), &|dir: &Path| {
            Some(dir.join("config.json")).filter(|p| p.is_file())
        });
        assert_eq!(found, Some(snapshot.join("config.json")));
    }

    #[test]
    fn the_published_zephyr_sft_model_has_gemma_7b_shapes() {
        assert_eq!(
            base_of("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1"),
            Some("google/gemma-7b")
        );
        assert_eq!(base_of("google/gemma-7b"), None);
    }
}
