//! `--set KEY=VALUE` overrides: dotted keys into the YAML tree, values typed
//! by YAML (`--set beta=0.1` is a number, `--set report_to=[]` a list).

use serde_yaml_ng::{Mapping, Value};

use super::error::RecipeError;

/// One parsed override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The key path, split at dots (`dataset_mixture.seed` is two parts).
    pub path: Vec<String>,
    pub value: Value,
    /// The text as given, for error messages.
    pub text: String,
}

impl Override {
    /// Parse `KEY=VALUE`; an empty value is YAML null.
    pub fn parse(text: &str) -> Result<Override, RecipeError> {
        let bad = |message: &str| RecipeError::BadOverride {
            text: text.to_string(),
            message: message.to_string(),
        };
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        if path.iter().any(|part| part.is_empty()) {
            return Err(bad("empty key"));
        }
        let value = if value.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml_ng::from_str(value)
                .map_err(|e| bad(&format!("value is not valid YAML: {e}")))?
        };
        Ok(Override {
            path,
            value,
            text: text.to_string(),
        })
    }

    /// Parse every `--set` argument.
    pub fn parse_all(texts: &[String]) -> Result<Vec<Override>, RecipeError> {
        texts.iter().map(|t| Override::parse(t)).collect()
    }

    /// Build overrides from a chained recipe's `overrides:` mapping. A value
    /// replaces the key's whole value; a top-level `sft:` or `dpo:` mapping
    /// scopes its keys to that stage.
    pub fn from_mapping(mapping: &Mapping) -> Vec<Override> {
        let mut out = Vec::new();
        for (key, value) in mapping {
            let key = scalar_text(key);
            match value {
                Value::Mapping(inner) if key == "sft" || key == "dpo" => {
                    for (inner_key, inner_value) in inner {
                        out.push(Override::new(
                            vec![key.clone(), scalar_text(inner_key)],
                            inner_value,
                        ));
                    }
                }
                _ => out.push(Override::new(vec![key], value)),
            }
        }
        out
    }

    fn new(path: Vec<String>, value: &Value) -> Override {
        let text = format!("{}={}", path.join("."), inline(value));
        Override {
            path,
            value: value.clone(),
            text,
        }
    }

    /// Set the value in `root`, creating intermediate mappings.
    pub fn apply(&self, root: &mut Mapping) -> Result<(), RecipeError> {
        let (last, parents) = self.path.split_last().expect("parse rejects empty keys");
        let mut node = root;
        for part in parents {
            let key = Value::String(part.clone());
            let child = node
                .entry(key)
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            node = match child {
                Value::Mapping(map) => map,
                _ => {
                    return Err(RecipeError::BadOverride {
                        text: self.text.clone(),
                        message: format!("`{part}` is not a mapping"),
                    });
                }
            };
        }
        node.insert(Value::String(last.clone()), self.value.clone());
        Ok(())
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => inline(other),
    }
}

fn inline(value: &Value) -> String {
    serde_yaml_ng::to_string(value)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_yaml_typed() {
        let o = Override::parse("beta=0.1").expect("parses");
        assert_eq!(o.path, vec!["beta"]);
        assert_eq!(o.value, Value::from(0.1));
        let o = Override::parse("report_to=[]").expect("parses");
        assert_eq!(o.value, Value::Sequence(vec![]));
        assert!(Override::parse("no_equals_sign").is_err());
    }

    #[test]
    fn dotted_keys_nest() {
        let mut root = Mapping::new();
        Override::parse("dataset_mixture.seed=3")
            .and_then(|o| o.apply(&mut root))
            .expect("applies");
        assert_eq!(root["dataset_mixture"]["seed"], Value::from(3));
    }
}
