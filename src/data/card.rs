//! A dataset card's `configs:` (the YAML header of the repo's README.md),
//! which names each split's files when a dataset does not follow the
//! hub's default layout, as `datasets.load_dataset` reads it:
//!
//! ```yaml
//! configs:
//! - config_name: default
//!   data_files:
//!   - split: train
//!     path: data/train-*
//! ```
//!
//! `data_files` may also be one pattern or a list of them (all `train`).
//! Patterns are globs: `*` within a folder, `**` across folders.

use serde_yaml_ng::Value;

/// The file patterns the card gives for `split` of `config` (the config
/// named `default`, else the one marked `default: true`, else the only one,
/// when none is asked), or `None` when the card says nothing of it.
pub fn split_patterns(card: &str, config: Option<&str>, split: &str) -> Option<Vec<String>> {
    let header = card.strip_prefix("---")?.split("\n---").next()?;
    let yaml: Value = serde_yaml_ng::from_str(header).ok()?;
    let configs = yaml.get("configs")?.as_sequence()?;
    let name_of = |c: &Value| {
        c.get("config_name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let chosen = match config {
        Some(name) => configs.iter().find(|c| name_of(c).as_deref() == Some(name)),
        None => configs
            .iter()
            .find(|c| name_of(c).as_deref() == Some("default"))
            .or_else(|| {
                configs
                    .iter()
                    .find(|c| c.get("default") == Some(&Value::Bool(true)))
            })
            .or_else(|| (configs.len() == 1).then(|| &configs[0])),
    }?;
    let files = chosen.get("data_files")?;
    let patterns = match files {
        Value::String(_) if split == "train" => strings(files),
        Value::Sequence(items) if items.iter().all(|i| i.is_string()) && split == "train" => {
            strings(files)
        }
        Value::Sequence(items) => items
            .iter()
            .filter(|i| i.get("split").and_then(Value::as_str) == Some(split))
            .flat_map(|i| i.get("path").map(strings).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    (!patterns.is_empty()).then_some(patterns)
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `path` matches the glob `pattern` (`*` stays within a folder,
/// `**` crosses folders, `?` is one character).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => s.first().is_some_and(|&c| c != b'/') && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n  - split: train_prefs\n    path: prefs/train-*\n  - split: test_prefs\n    path: [prefs/test-*]\n- config_name: raw\n  data_files: raw/*.parquet\n---\n# Card\n";

    #[test]
    fn the_card_names_each_splits_files() {
        assert_eq!(
            split_patterns(CARD, None, "train_prefs"),
            Some(vec!["prefs/train-*".to_string()])
        );
        assert_eq!(
            split_patterns(CARD, None, "test_prefs"),
            Some(vec!["prefs/test-*".to_string()])
        );
        assert_eq!(
            split_patterns(CARD, Some("raw"), "train"),
            Some(vec!["raw/*.parquet".to_string()])
        );
        assert_eq!(split_patterns(CARD, None, "validation"), None);
        assert_eq!(split_patterns("# no header\n", None, "train"), None);
    }

    #[test]
    fn globs_match_as_the_hub_means_them() {
        assert!(glob_match(
            "prefs/train-*",
            "prefs/train-00000-of-00001.parquet"
        ));
        assert!(!glob_match("prefs/train-*", "prefs/train-x/y.parquet"));
        assert!(glob_match("**/*.parquet", "a/b/c.parquet"));
        assert!(glob_match("data/**", "data/x/y.parquet"));
        assert!(!glob_match("data/*.parquet", "other/x.parquet"));
    }

    #[test]
    fn a_pattern_with_a_star_in_a_name_matches() {
        let card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: dpo_train\n    path: pairs/first*.parquet\n---\n# tiny\n";
        let patterns = split_patterns(card, None, "dpo_train");
        assert_eq!(patterns, Some(vec!["pairs/first*.parquet".to_string()]));
        assert!(glob_match(
            "pairs/first*.parquet",
            "pairs/first-part.parquet"
        ));
    }
}
