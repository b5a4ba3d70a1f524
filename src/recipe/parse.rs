//! From one stage's YAML mapping to a typed [`StageConfig`]: overrides,
//! old spellings, key checks (unknown, ignored), stage kind, per-key type
//! checks, the defaults of the stage's TRL config class, validation and
//! relative paths, in that order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::dataset::DataArgs;
use super::error::{Origin, RecipeError, Warning};
use super::keys::{self, ALIASES, KeyStatus};
use super::overrides::Override;
use super::paths::resolve_input;
use super::stage::{DpoArgs, Extensions, ModelArgs, SftArgs, StageConfig};
use super::training::TrainingArgs;
use super::values::{Compat, StageKind};

/// A config file's path and text, for error locations.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// Line of a top-level `key:` in the file, if it is written plainly.
    fn line_of(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|line| {
                line.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .map(|index| index + 1)
    }
}

/// The overrides that apply to one stage.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageOverrides {
    /// Applied to every stage, in order.
    pub global: Vec<Override>,
    /// `sft.KEY=...` / `dpo.KEY=...`: applied to stages of that kind only.
    pub scoped: Vec<(StageKind, Override)>,
}

/// Everything `parse_stage` needs besides the mapping.
pub(crate) struct StageInput<'a> {
    pub file: &'a SourceFile,
    /// Folder that relative input paths fall back to.
    pub config_dir: &'a Path,
    pub overrides: &'a StageOverrides,
    /// Stage kind given by the command or the chain; `None`: inferred.
    pub kind: Option<StageKind>,
}

/// Parse one stage. Warnings for ignored keys are appended to `warnings`.
pub(crate) fn parse_stage(
    mut map: Mapping,
    input: &StageInput,
    warnings: &mut Vec<Warning>,
) -> Result<StageConfig, RecipeError> {
    let ctx = Ctx {
        file: input.file,
        overridden: BTreeSet::new(),
    };
    let mut ctx = ctx;
    for o in &input.overrides.global {
        ctx.apply(o, &mut map)?;
    }
    let kind = match input.kind {
        Some(kind) => kind,
        None => ctx.infer_kind(&map, &input.overrides.scoped)?,
    };
    for (scope, o) in &input.overrides.scoped {
        if *scope == kind {
            ctx.apply(o, &mut map)?;
        } else if input.kind.is_none() {
            return Err(RecipeError::BadOverride {
                text: o.text.clone(),
                message: format!(
                    "this config is {} stage, so `{}.` overrides do not apply",
                    kind.with_article(),
                    scope.name()
                ),
            });
        }
    }
    ctx.rename_aliases(&mut map)?;
    ctx.check_keys(&mut map, kind, warnings)?;
    ctx.check_types(&map)?;
    let explicit: BTreeSet<String> = map
        .keys()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    let compat = compat_of(&map);
    insert_stage_defaults(&mut map, kind, compat);
    let mut stage = StageConfig {
        kind,
        source: input.file.path.clone(),
        model: ctx.group(&map)?,
        data: ctx.group(&map)?,
        training: ctx.group(&map)?,
        sft: ctx.group(&map)?,
        dpo: ctx.group(&map)?,
        ext: ctx.group(&map)?,
    };
    ctx.fold_max_seq_length(&mut stage, &explicit)?;
    ctx.validate(&stage)?;
    report_to_warnings(&stage, &input.file.path, warnings);
    resolve_paths(&mut stage, input.config_dir);
    Ok(stage)
}

struct Ctx<'a> {
    file: &'a SourceFile,
    /// Top-level keys set by an override (their errors say so).
    overridden: BTreeSet<String>,
}

impl Ctx<'_> {
    fn origin(&self, key: &str) -> Origin {
        if self.overridden.contains(key) {
            return Origin::Override;
        }
        self.file.line_of(key).map_or(Origin::Unknown, Origin::Line)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> RecipeError {
        RecipeError::InvalidValue {
            path: self.file.path.clone(),
            key: key.to_string(),
            origin: self.origin(key),
            message: message.into(),
        }
    }

    fn apply(&mut self, o: &Override, map: &mut Mapping) -> Result<(), RecipeError> {
        self.overridden.insert(o.path[0].clone());
        o.apply(map)
    }

    /// SFT if any SFT-only key is present, DPO if any DPO-only key is.
    fn infer_kind(
        &self,
        map: &Mapping,
        scoped: &[(StageKind, Override)],
    ) -> Result<StageKind, RecipeError> {
        let mut found: Vec<(StageKind, String)> = Vec::new();
        for key in map.keys().filter_map(Value::as_str) {
            if let Some(kind) = keys::kind_of(key)
                && !found.iter().any(|(k, _)| *k == kind)
            {
                found.push((kind, key.to_string()));
            }
        }
        let scoped_kinds: BTreeSet<&str> = scoped.iter().map(|(k, _)| k.name()).collect();
        match (found.as_slice(), scoped_kinds.len()) {
            ([(kind, _)], _) => Ok(*kind),
            ([], 1) => Ok(scoped[0].0),
            ([], _) => Err(RecipeError::Invalid {
                path: self.file.path.clone(),
                message: "cannot tell whether this is an SFT or a DPO config (no key such as \
                          `beta` or `max_seq_length`): run it with `align sft` or `align dpo`"
                    .into(),
            }),
            _ => Err(RecipeError::Invalid {
                path: self.file.path.clone(),
                message: format!(
                    "mixes SFT and DPO keys (`{}` and `{}`)",
                    found[0].1, found[1].1
                ),
            }),
        }
    }

    fn rename_aliases(&self, map: &mut Mapping) -> Result<(), RecipeError> {
        for (old, new) in ALIASES {
            let Some(value) = map.shift_remove(*old) else {
                continue;
            };
            match map.get(*new) {
                Some(existing) if *existing != value => {
                    return Err(
                        self.invalid(old, format!("conflicts with `{new}`, which is also set"))
                    );
                }
                _ => {
                    map.insert(Value::from(*new), value);
                }
            }
        }
        Ok(())
    }

    /// Unknown keys are errors; ignored keys warn and are dropped; keys of
    /// the other objective are errors.
    fn check_keys(
        &self,
        map: &mut Mapping,
        kind: StageKind,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), RecipeError> {
        let keys: Vec<Value> = map.keys().cloned().collect();
        for key_value in keys {
            let Some(key) = key_value.as_str() else {
                return Err(RecipeError::Invalid {
                    path: self.file.path.clone(),
                    message: format!("key {key_value:?} is not a string"),
                });
            };
            match keys::status(key) {
                KeyStatus::Known => {
                    if let Some(owner) = keys::kind_of(key)
                        && owner != kind
                    {
                        return Err(self.invalid(
                            key,
                            format!(
                                "is {} key, but this is {} stage",
                                owner.with_article(),
                                kind.with_article()
                            ),
                        ));
                    }
                }
                KeyStatus::Ignored(why) => {
                    warnings.push(Warning {
                        path: self.file.path.clone(),
                        key: key.to_string(),
                        message: why.to_string(),
                    });
                    map.shift_remove(&key_value);
                }
                KeyStatus::UnsupportedWhenTrue(why) => {
                    if map.get(&key_value) == Some(&Value::Bool(true)) {
                        return Err(self.invalid(key, why));
                    }
                    map.shift_remove(&key_value);
                }
                KeyStatus::Unknown { suggestion } => {
                    return Err(RecipeError::UnknownKey {
                        path: self.file.path.clone(),
                        key: key.to_string(),
                        origin: self.origin(key),
                        suggestion,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deserialize every key on its own, so a type error names its key.
    fn check_types(&self, map: &Mapping) -> Result<(), RecipeError> {
        for (key, value) in map {
            let mut single = Mapping::new();
            single.insert(key.clone(), value.clone());
            let single = Value::Mapping(single);
            let key = key.as_str().unwrap_or_default();
            check_group::<ModelArgs>(&single)
                .and_then(|_| check_group::<DataArgs>(&single))
                .and_then(|_| check_group::<TrainingArgs>(&single))
                .and_then(|_| check_group::<SftArgs>(&single))
                .and_then(|_| check_group::<DpoArgs>(&single))
                .and_then(|_| check_group::<Extensions>(&single))
                .map_err(|e| self.invalid(key, clean_serde_message(&e.to_string())))?;
        }
        Ok(())
    }

    fn group<T: DeserializeOwned>(&self, map: &Mapping) -> Result<T, RecipeError> {
        serde_yaml_ng::from_value(Value::Mapping(map.clone())).map_err(|e| RecipeError::Invalid {
            path: self.file.path.clone(),
            message: clean_serde_message(&e.to_string()),
        })
    }

    /// The handbook's SFT `max_seq_length` is TRL 1.x's `max_length`.
    fn fold_max_seq_length(
        &self,
        stage: &mut StageConfig,
        explicit: &BTreeSet<String>,
    ) -> Result<(), RecipeError> {
        let Some(seq) = stage.sft.max_seq_length.take() else {
            return Ok(());
        };
        if explicit.contains("max_length") && stage.data.max_length != Some(seq) {
            return Err(self.invalid(
                "max_seq_length",
                "conflicts with `max_length`, which is also set",
            ));
        }
        stage.data.max_length = Some(seq);
        Ok(())
    }

    fn validate(&self, stage: &StageConfig) -> Result<(), RecipeError> {
        if stage.model.model_name_or_path.trim().is_empty() {
            return Err(self.invalid("model_name_or_path", "is required"));
        }
        stage
            .training
            .validate()
            .map_err(|(key, msg)| self.invalid(key, msg))?;
        stage
            .data
            .plan()
            .map_err(|(key, msg)| self.invalid(key, msg))?;
        if stage.data.max_length == Some(0) {
            return Err(self.invalid("max_length", "must be at least 1"));
        }
        if stage.kind == StageKind::Dpo {
            let dpo = &stage.dpo;
            if !(dpo.beta > 0.0 && dpo.beta.is_finite()) {
                return Err(self.invalid("beta", format!("must be > 0, got {}", dpo.beta)));
            }
            if !(0.0..0.5).contains(&dpo.label_smoothing) {
                return Err(self.invalid(
                    "label_smoothing",
                    format!("must be in [0, 0.5), got {}", dpo.label_smoothing),
                ));
            }
        }
        Ok(())
    }
}

fn check_group<T: DeserializeOwned>(single: &Value) -> Result<(), serde_yaml_ng::Error> {
    serde_yaml_ng::from_value::<T>(single.clone()).map(|_| ())
}

/// serde messages sometimes end with a position inside the probe value,
/// which means nothing to the user.
fn clean_serde_message(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string()
}

fn compat_of(map: &Mapping) -> Compat {
    map.get("compat")
        .and_then(|v| serde_yaml_ng::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The defaults that TRL's `SFTConfig`/`DPOConfig` (or, for trl-0.7, plain
/// transformers 4.38 `TrainingArguments` and TRL 0.7.10's `DPOTrainer`)
/// put over transformers' `TrainingArguments` defaults.
fn insert_stage_defaults(map: &mut Mapping, kind: StageKind, compat: Compat) {
    let mut defaults: Vec<(&str, Value)> = Vec::new();
    match (compat, kind) {
        (Compat::Trl1, StageKind::Sft) => {
            defaults.push(("learning_rate", Value::from(2e-5)));
            defaults.push(("logging_steps", Value::from(10)));
            defaults.push(("gradient_checkpointing", Value::from(true)));
            if !map.contains_key("max_seq_length") {
                defaults.push(("max_length", Value::from(1024)));
            }
        }
        (Compat::Trl1, StageKind::Dpo) => {
            defaults.push(("learning_rate", Value::from(1e-6)));
            defaults.push(("logging_steps", Value::from(10)));
            defaults.push(("gradient_checkpointing", Value::from(true)));
            defaults.push(("max_length", Value::from(1024)));
        }
        (Compat::Trl07, StageKind::Sft) => {
            // handbook ff618a4 SFTConfig
            defaults.push(("logging_first_step", Value::from(true)));
            if !map.contains_key("max_seq_length") {
                defaults.push(("max_length", Value::from(1024)));
            }
        }
        (Compat::Trl07, StageKind::Dpo) => {
            // handbook ff618a4 DPOConfig
            defaults.push(("logging_first_step", Value::from(true)));
            defaults.push(("max_length", Value::from(512)));
            defaults.push(("max_prompt_length", Value::from(128)));
            defaults.push(("truncation_mode", Value::from("keep_end")));
        }
    }
    for (key, value) in defaults {
        if !map.contains_key(key) {
            map.insert(Value::from(key), value);
        }
    }
}

fn report_to_warnings(stage: &StageConfig, path: &Path, warnings: &mut Vec<Warning>) {
    for target in &stage.training.report_to.0 {
        if target != "tensorboard" && target != "all" {
            warnings.push(Warning {
                path: path.to_path_buf(),
                key: format!("report_to: {target}"),
                message: "only tensorboard (and metrics.jsonl) are written".into(),
            });
        }
    }
}

/// Inputs fall back to the config's folder (see `paths.rs`).
fn resolve_paths(stage: &mut StageConfig, config_dir: &Path) {
    let model = &mut stage.model;
    model.model_name_or_path = resolve_input(&model.model_name_or_path, config_dir);
    for path in [&mut model.tokenizer_name_or_path, &mut model.ref_model]
        .into_iter()
        .flatten()
    {
        *path = resolve_input(path, config_dir);
    }
    for id in stage.data.dataset_ids_mut() {
        *id = resolve_input(id, config_dir);
    }
}
