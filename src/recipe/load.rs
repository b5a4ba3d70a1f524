//! Reading a recipe: one handbook config file (a single stage), or a
//! chained recipe (`stages:`) that runs SFT then DPO, with `--set`
//! overrides applied (file < chain `overrides:` < command line).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::error::{Origin, RecipeError, Warning};
use super::keys::{CHAIN_KEYS, closest};
use super::overrides::Override;
use super::parse::{SourceFile, StageInput, StageOverrides, parse_stage};
use super::stage::StageConfig;
use super::values::StageKind;

/// A loaded recipe: one or more stages, run in order.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The file given on the command line.
    pub path: PathBuf,
    pub stages: Vec<StageConfig>,
    /// Whether it was the `stages:` form.
    pub chained: bool,
    /// Keys accepted but ignored, one per key and file.
    pub warnings: Vec<Warning>,
}

impl Recipe {
    /// Load `path` with `--set` overrides, inferring the stage kind of a
    /// single config from its keys.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
        Recipe::load_as(path, overrides, None)
    }

    /// Load as `align sft`/`align dpo` do: a single config is read as that
    /// kind; of a chained recipe only the stages of that kind are kept.
    pub fn load_as(
        path: &Path,
        overrides: &[String],
        kind: Option<StageKind>,
    ) -> Result<Recipe, RecipeError> {
        let cli = split_scoped(Override::parse_all(overrides)?);
        let file = read_source(path)?;
        let mut map = parse_mapping(&file)?;
        // Read by `align sweep` only (src/sweep); every other command runs the
        // recipe as it is.
        map.shift_remove("sweep");
        let mut warnings = Vec::new();
        let chained = map.contains_key("stages");
        let stages = if chained {
            let mut stages = load_chain(&file, map, &cli, &mut warnings)?;
            if let Some(kind) = kind {
                stages.retain(|s| s.kind == kind);
                if stages.is_empty() {
                    return Err(RecipeError::Invalid {
                        path: path.to_path_buf(),
                        message: format!("the chained recipe has no {} stage", kind.name()),
                    });
                }
            }
            stages
        } else {
            let input = StageInput {
                file: &file,
                config_dir: &config_dir(path),
                overrides: &cli,
                kind,
            };
            vec![parse_stage(map, &input, &mut warnings)?]
        };
        Ok(Recipe {
            path: path.to_path_buf(),
            stages,
            chained,
            warnings,
        })
    }

    /// The first stage of `kind`.
    pub fn stage(&self, kind: StageKind) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.kind == kind)
    }
}

fn read_source(path: &Path) -> Result<SourceFile, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        text,
    })
}

fn parse_mapping(file: &SourceFile) -> Result<Mapping, RecipeError> {
    let value: Value = serde_yaml_ng::from_str(&file.text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        RecipeError::Yaml {
            path: file.path.clone(),
            line,
            column,
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    })?;
    match value {
        Value::Mapping(map) => Ok(map),
        other => Err(RecipeError::NotAMapping {
            path: file.path.clone(),
            found: describe(&other).into(),
        }),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `sft.KEY=...` and `dpo.KEY=...` are scoped to one stage kind.
fn split_scoped(overrides: Vec<Override>) -> StageOverrides {
    let mut out = StageOverrides::default();
    for mut o in overrides {
        let scope = match o.path[0].as_str() {
            "sft" => Some(StageKind::Sft),
            "dpo" => Some(StageKind::Dpo),
            _ => None,
        };
        match scope {
            Some(kind) if o.path.len() > 1 => {
                o.path.remove(0);
                out.scoped.push((kind, o));
            }
            _ => out.global.push(o),
        }
    }
    out
}

fn load_chain(
    file: &SourceFile,
    mut map: Mapping,
    cli: &StageOverrides,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<StageConfig>, RecipeError> {
    check_chain_keys(file, &map)?;
    let invalid = |message: String| RecipeError::Invalid {
        path: file.path.clone(),
        message,
    };
    let chain_overrides = match map.shift_remove("overrides") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Mapping(m)) => Override::from_mapping(&m),
        Some(_) => {
            return Err(invalid(
                "`overrides` must be a mapping of recipe keys".into(),
            ));
        }
    };
    let mut overrides = split_scoped(chain_overrides);
    overrides.global.extend(cli.global.iter().cloned());
    overrides.scoped.extend(cli.scoped.iter().cloned());

    let Some(Value::Sequence(entries)) = map.shift_remove("stages") else {
        return Err(invalid(
            "`stages` must be a list such as `- sft: sft/config.yaml`".into(),
        ));
    };
    if entries.is_empty() {
        return Err(invalid("`stages` is empty".into()));
    }
    let recipe_dir = config_dir(&file.path);
    let mut stages: Vec<StageConfig> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let (kind, body) =
            stage_entry(entry).map_err(|m| invalid(format!("stages[{index}]: {m}")))?;
        let (stage_file, mut stage_map) = match body {
            Value::String(rel) => {
                let stage_path = resolve_stage_path(rel, &recipe_dir);
                let stage_file = read_source(&stage_path)?;
                let stage_map = parse_mapping(&stage_file)?;
                if stage_map.contains_key("stages") {
                    return Err(invalid(format!(
                        "stages[{index}]: {} is itself a chained recipe",
                        stage_path.display()
                    )));
                }
                (stage_file, stage_map)
            }
            Value::Mapping(inline) => (file.clone(), inline.clone()),
            _ => {
                return Err(invalid(format!(
                    "stages[{index}]: expected a file path or a mapping of keys"
                )));
            }
        };
        link_to_previous(&mut stage_map, kind, &stages);
        let input = StageInput {
            file: &stage_file,
            config_dir: &config_dir(&stage_file.path),
            overrides: &overrides,
            kind: Some(kind),
        };
        let mut stage = parse_stage(stage_map, &input, warnings)?;
        inherit_tokenizer(&mut stage, &stages);
        stages.push(stage);
    }
    Ok(stages)
}

fn check_chain_keys(file: &SourceFile, map: &Mapping) -> Result<(), RecipeError> {
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !CHAIN_KEYS.contains(&key) {
            return Err(RecipeError::UnknownKey {
                path: file.path.clone(),
                key: key.to_string(),
                origin: Origin::Unknown,
                suggestion: closest(key, CHAIN_KEYS.iter().copied()),
            });
        }
    }
    Ok(())
}

/// `- sft: PATH` (or an inline mapping) -> (kind, body).
fn stage_entry(entry: &Value) -> Result<(StageKind, &Value), String> {
    let Value::Mapping(m) = entry else {
        return Err("expected `sft: PATH` or `dpo: PATH`".into());
    };
    let mut items = m.iter();
    let (Some((key, body)), None) = (items.next(), items.next()) else {
        return Err("expected exactly one key, `sft` or `dpo`".into());
    };
    match key.as_str() {
        Some("sft") => Ok((StageKind::Sft, body)),
        Some("dpo") => Ok((StageKind::Dpo, body)),
        _ => Err(format!("unknown stage {key:?}: expected `sft` or `dpo`")),
    }
}

/// Stage files are relative to the chained recipe's folder (or to the current
/// directory when the file exists only there).
fn resolve_stage_path(rel: &str, recipe_dir: &Path) -> PathBuf {
    let path = Path::new(rel);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let beside = recipe_dir.join(path);
    if beside.exists() || !path.exists() {
        beside
    } else {
        path.to_path_buf()
    }
}

/// A DPO stage after an SFT stage starts from the SFT output, as the
/// handbook chains them.
/// Overrides, applied later, can still point it elsewhere.
fn link_to_previous(map: &mut Mapping, kind: StageKind, previous: &[StageConfig]) {
    if kind != StageKind::Dpo {
        return;
    }
    if let Some(sft) = previous.iter().rev().find(|s| s.kind == StageKind::Sft) {
        map.insert(
            Value::from("model_name_or_path"),
            Value::from(sft.training.output_dir.clone()),
        );
    }
}

/// The SFT output will carry the SFT tokenizer and chat template; until it
/// exists (`align data` before training) read them from the SFT's sources.
fn inherit_tokenizer(stage: &mut StageConfig, previous: &[StageConfig]) {
    if stage.kind != StageKind::Dpo {
        return;
    }
    let Some(sft) = previous.iter().rev().find(|s| s.kind == StageKind::Sft) else {
        return;
    };
    if stage.model.model_name_or_path != sft.training.output_dir {
        return;
    }
    if stage.model.tokenizer_name_or_path.is_none() {
        stage.model.tokenizer_name_or_path = Some(sft.model.tokenizer_source().to_string());
    }
    if stage.data.chat_template.is_none() {
        stage.data.chat_template = sft.data.chat_template.clone();
    }
}
