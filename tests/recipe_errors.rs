//! Bad recipes: each is an error that names the file, the key and (where
//! the file has one) the line, never a panic.

use std::path::PathBuf;

use align::recipe::{Recipe, RecipeError};

const VALID: &str =
    "model_name_or_path: m\ndataset_mixer:\n  d: 1.0\nbeta: 0.1\nlearning_rate: 0.001\n";

/// Write `text` to a temporary config and load it.
fn load_text(
    text: &str,
    overrides: &[&str],
) -> (tempfile::TempDir, PathBuf, Result<Recipe, RecipeError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).expect("write");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let result = Recipe::load(&path, &overrides);
    (dir, path, result)
}

fn error_text(text: &str, overrides: &[&str]) -> String {
    let (dir, _path, result) = load_text(text, overrides);
    let message = result.expect_err("must be rejected").to_string();
    let named = message.contains(&dir.path().display().to_string()) || message.starts_with("--set");
    assert!(named, "no file named: {message}");
    message
}

#[test]
fn the_valid_base_config_loads() {
    let (_dir, _path, result) = load_text(VALID, &[]);
    result.expect("valid");
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let text = "model_name_or_path: m\nbeta: [0.1\nlearning_rate: 0.001\n";
    let message = error_text(text, &[]);
    assert!(message.contains("malformed YAML"), "{message}");
    let (_dir, _path, result) = load_text(text, &[]);
    match result {
        Err(RecipeError::Yaml { line, column, .. }) => {
            assert!(line >= 2 && column > 0, "line {line} column {column}")
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn unknown_key_suggests_the_closest_known_key_and_its_line() {
    let message = error_text(&format!("{VALID}learnig_rate: 0.1\n"), &[]);
    assert!(
        message.contains("config.yaml:6: unknown key `learnig_rate`"),
        "{message}"
    );
    assert!(
        message.contains("did you mean `learning_rate`?"),
        "{message}"
    );
}

#[test]
fn unknown_key_from_an_override_says_so() {
    let message = error_text(VALID, &["bta=0.2"]);
    assert!(
        message.contains("(override): unknown key `bta`") && message.contains("`beta`"),
        "{message}"
    );
}

#[test]
fn wrong_value_type_names_the_key_and_line() {
    let message = error_text(
        &VALID.replace("learning_rate: 0.001", "learning_rate: fast"),
        &[],
    );
    assert!(
        message.contains("config.yaml:5: key `learning_rate`"),
        "{message}"
    );
    assert!(message.contains("invalid type"), "{message}");
    let message = error_text(&format!("{VALID}lr_scheduler_type: cosin\n"), &[]);
    assert!(
        message.contains("key `lr_scheduler_type`") && message.contains("cosine"),
        "{message}"
    );
    let message = error_text(&format!("{VALID}per_device_train_batch_size: -2\n"), &[]);
    assert!(
        message.contains("key `per_device_train_batch_size`"),
        "{message}"
    );
}

#[test]
fn invalid_values_name_their_key() {
    let message = error_text(&VALID.replace("beta: 0.1", "beta: 0"), &[]);
    assert!(message.contains("key `beta`: must be > 0"), "{message}");
    let message = error_text(&format!("{VALID}warmup_ratio: 1.5\n"), &[]);
    assert!(message.contains("key `warmup_ratio`"), "{message}");
    let message = error_text(&format!("{VALID}gradient_accumulation_steps: 0\n"), &[]);
    assert!(
        message.contains("key `gradient_accumulation_steps`: must be at least 1"),
        "{message}"
    );
    let message = error_text(&VALID.replace("d: 1.0", "d: 1.5"), &[]);
    assert!(
        message.contains("key `dataset_mixer`") && message.contains("[0, 1]"),
        "{message}"
    );
}

#[test]
fn not_a_mapping_and_empty_files_are_errors() {
    assert!(error_text("- a\n- b\n", &[]).contains("found a list"));
    assert!(error_text("", &[]).contains("found an empty document"));
}

#[test]
fn missing_required_and_ambiguous_configs_are_errors() {
    let message = error_text("dataset_mixer: {d: 1.0}\nbeta: 0.1\n", &[]);
    assert!(
        message.contains("key `model_name_or_path`: is required"),
        "{message}"
    );
    let message = error_text("model_name_or_path: m\nbeta: 0.1\n", &[]);
    assert!(message.contains("no dataset"), "{message}");
    let message = error_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\n", &[]);
    assert!(
        message.contains("cannot tell whether this is an SFT or a DPO config"),
        "{message}"
    );
    let message = error_text(&format!("{VALID}max_seq_length: 12\n"), &[]);
    assert!(message.contains("mixes SFT and DPO keys"), "{message}");
}

#[test]
fn features_that_are_not_implemented_are_refused_when_asked_for() {
    let message = error_text(&format!("{VALID}use_peft: true\n"), &[]);
    assert!(
        message.contains("key `use_peft`") && message.contains("not implemented"),
        "{message}"
    );
    let (_dir, _path, result) = load_text(&format!("{VALID}use_peft: false\n"), &[]);
    result.expect("use_peft: false is harmless");
}

#[test]
fn bad_overrides_are_errors() {
    let message = error_text(VALID, &["beta"]);
    assert!(
        message.contains("--set `beta`: expected KEY=VALUE"),
        "{message}"
    );
    let message = error_text(VALID, &["beta=[0.1"]);
    assert!(message.contains("not valid YAML"), "{message}");
    let message = error_text(VALID, &["beta=high"]);
    assert!(message.contains("(override): key `beta`"), "{message}");
}

#[test]
fn chained_recipe_errors_name_the_problem() {
    let message = error_text("stages:\n  - sft: missing.yaml\n", &[]);
    assert!(message.contains("missing.yaml: cannot read"), "{message}");
    let message = error_text("stages:\n  - ppo: x.yaml\n", &[]);
    assert!(message.contains("stages[0]: unknown stage"), "{message}");
    let message = error_text("stages: []\n", &[]);
    assert!(message.contains("`stages` is empty"), "{message}");
    let message = error_text("stages:\n  - sft: x.yaml\noverride: {}\n", &[]);
    assert!(
        message.contains("unknown key `override`") && message.contains("`overrides`"),
        "{message}"
    );
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let path = PathBuf::from("/nonexistent/dir/recipe.yaml");
    let message = Recipe::load(&path, &[]).expect_err("missing").to_string();
    assert!(
        message.starts_with("/nonexistent/dir/recipe.yaml: cannot read"),
        "{message}"
    );
}
