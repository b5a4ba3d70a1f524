//! What tells the runs apart: the keys that vary between them and each
//! run's values, for the table's columns and the plots' legends.
//!
//! Runs made by `align sweep` are named `key=value,...` after the grid, so
//! their folder names say it, including keys scoped to one stage
//! (`sft.learning_rate`) that the last stage's recipe cannot show. Other
//! folders (two checkpoints' runs, runs of different recipes) are told
//! apart by the keys on which their resolved `recipe.yaml` differ.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::metrics::RunLog;

/// Keys that differ between any two runs by construction.
const LOCATION_KEYS: &[&str] = &["output_dir", "logging_dir", "run_name"];

/// The varied keys and, per run, one value for each.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub keys: Vec<String>,
    /// `values[run][key]`, as text.
    pub values: Vec<Vec<String>>,
}

impl Labels {
    /// From the folder names if every run is a sweep folder with the same
    /// keys, else from the runs' recipes.
    pub fn of(runs: &[RunLog]) -> Labels {
        match from_folder_names(runs) {
            Some(pairs) => varied(pairs, runs.len() == 1),
            None => varied(runs.iter().map(recipe_pairs).collect(), false),
        }
    }

    /// `beta=0.01, loss_type=ipo`: the legend of run `index` (its folder
    /// name when nothing varies).
    pub fn legend(&self, index: usize, runs: &[RunLog]) -> String {
        if self.keys.is_empty() {
            return folder_name(&runs[index]);
        }
        self.keys
            .iter()
            .zip(&self.values[index])
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The legend without key `skip`: what the other keys are set to.
    pub fn legend_without(&self, index: usize, skip: usize) -> String {
        self.keys
            .iter()
            .zip(&self.values[index])
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, (k, v))| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Key `key`'s values as numbers, if every run's is one.
    pub fn numeric(&self, key: usize) -> Option<Vec<f64>> {
        self.values
            .iter()
            .map(|values| values[key].parse::<f64>().ok())
            .collect()
    }
}

fn folder_name(run: &RunLog) -> String {
    run.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run.dir.display().to_string())
}

/// `a=1,b=[x,y]` -> `[(a, 1), (b, [x,y])]`: a comma starts a new pair only
/// where an `=` follows before the next comma.
fn parse_folder_name(name: &str) -> Option<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in name.split(',') {
        match part.split_once('=') {
            Some((key, value)) if !key.is_empty() && !key.contains(['[', '{']) => {
                pairs.push((key.to_string(), value.to_string()));
            }
            _ => pairs.last_mut()?.1.push_str(&format!(",{part}")),
        }
    }
    (!pairs.is_empty()).then_some(pairs)
}

fn from_folder_names(runs: &[RunLog]) -> Option<Vec<Vec<(String, String)>>> {
    let pairs: Vec<Vec<(String, String)>> = runs
        .iter()
        .map(|run| parse_folder_name(&folder_name(run)))
        .collect::<Option<_>>()?;
    let keys = |p: &Vec<(String, String)>| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let first = keys(pairs.first()?);
    pairs.iter().all(|p| keys(p) == first).then_some(pairs)
}

/// The flattened `recipe.yaml` of a run (nested keys dotted); none if the
/// folder has no readable one.
fn recipe_pairs(run: &RunLog) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(run.dir.join("recipe.yaml")).unwrap_or_default();
    let map: Mapping = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let mut pairs = Vec::new();
    flatten("", &map, &mut pairs);
    pairs.retain(|(k, _)| !LOCATION_KEYS.contains(&k.as_str()));
    pairs
}

fn flatten(prefix: &str, map: &Mapping, out: &mut Vec<(String, String)>) {
    for (key, value) in map {
        let key = format!("{prefix}{}", inline(key));
        match value {
            Value::Mapping(inner) => flatten(&format!("{key}."), inner, out),
            other => out.push((key, inline(other))),
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Keeps the keys whose values are not all the same (all of them when
/// `keep_all`); a key a run lacks reads `-`.
fn varied(pairs: Vec<Vec<(String, String)>>, keep_all: bool) -> Labels {
    let mut keys: Vec<String> = Vec::new();
    for run in &pairs {
        for (key, _) in run {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    let maps: Vec<BTreeMap<&str, &str>> = pairs
        .iter()
        .map(|run| run.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .collect();
    let value = |run: &BTreeMap<&str, &str>, key: &str| run.get(key).unwrap_or(&"-").to_string();
    keys.retain(|key| {
        keep_all
            || maps
                .iter()
                .any(|run| value(run, key) != value(&maps[0], key))
    });
    let values = maps
        .iter()
        .map(|run| keys.iter().map(|key| value(run, key)).collect())
        .collect();
    Labels { keys, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_folder_names_read_back() {
        assert_eq!(
            parse_folder_name("dpo.beta=0.1,loss_type=[sigmoid,_sft]"),
            Some(vec![
                ("dpo.beta".into(), "0.1".into()),
                ("loss_type".into(), "[sigmoid,_sft]".into()),
            ])
        );
        assert_eq!(parse_folder_name("checkpoint-100"), None);
    }

    #[test]
    fn only_keys_that_differ_are_kept() {
        let pairs = vec![
            vec![("a".into(), "1".into()), ("b".into(), "x".into())],
            vec![("a".into(), "2".into()), ("b".into(), "x".into())],
        ];
        let labels = varied(pairs, false);
        assert_eq!(labels.keys, vec!["a"]);
        assert_eq!(labels.numeric(0), Some(vec![1.0, 2.0]));
    }
}
