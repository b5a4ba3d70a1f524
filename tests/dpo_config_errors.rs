//! DPO loss settings are checked before any work starts, with errors that
//! name the file and key; a list of loss types with weights runs.

mod common;

use align::backend::{CpuTrain, cpu_device};
use align::recipe::StageKind;
use align::train::run::run_recipe;
use align::train::stage::RunOptions;
use common::{fixture, read_jsonl};

fn run(extra: &[&str], output: &std::path::Path) -> Result<(), String> {
    let mut set = vec![format!("output_dir={}", output.display())];
    set.extend(extra.iter().map(|s| s.to_string()));
    run_recipe::<CpuTrain>(
        &fixture("tiny-gemma/recipe_dpo.yaml"),
        &set,
        Some(StageKind::Dpo),
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        true,
        &cpu_device(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[test]
fn unknown_loss_type_is_a_config_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run(&["loss_type=sigmoidd"], &out).unwrap_err();
    assert!(
        err.contains("recipe_dpo.yaml") && err.contains("loss_type"),
        "{err}"
    );
    assert!(
        err.contains("sigmoidd") && err.contains("apo_zero"),
        "lists the valid names: {err}"
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn non_positive_beta_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(&["beta=0"], &dir.path().join("out")).unwrap_err();
    assert!(err.contains("beta"), "{err}");
}

#[test]
fn mismatched_loss_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &["loss_type=[sigmoid, ipo]", "loss_weights=[1.0]"],
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(err.contains("loss_weights"), "{err}");
}

#[test]
fn a_weighted_list_of_loss_types_trains() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(
        &[
            "loss_type=[sigmoid, ipo]",
            "loss_weights=[0.5, 0.25]",
            "max_steps=1",
            "do_eval=false",
        ],
        &out,
    )
    .unwrap();
    let first = &read_jsonl(&out.join("metrics.jsonl"))[0];
    // Step 1: policy = reference, so δ = 0: 0.5·ln 2 + 0.25·(1/(2β))² with β = 0.05.
    let expected = 0.5 * std::f64::consts::LN_2 + 0.25 * 100.0;
    let loss = first["loss"].as_f64().unwrap();
    assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
}

#[test]
fn a_diverging_run_stops_with_the_step_and_saves_no_model() {
    // lr 1e30: step 1 runs at lr 0 (warmup), step 2's update blows the weights
    // up, and the loss of step 3 is no longer finite.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run(
        &["learning_rate=1e30", "max_steps=4", "max_grad_norm=0"],
        &out,
    )
    .unwrap_err();
    assert!(err.contains("not finite") && err.contains("step"), "{err}");
    assert!(
        !out.join("model.safetensors").exists(),
        "no model from a failed run"
    );
    let logged = read_jsonl(&out.join("metrics.jsonl"));
    assert!(
        !logged.is_empty(),
        "the steps before the failure stay logged"
    );
}

#[test]
fn discopop_tau_is_a_recipe_key_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run(&["loss_type=discopop", "discopop_tau=0"], &out).unwrap_err();
    assert!(
        err.contains("recipe_dpo.yaml") && err.contains("`discopop_tau`"),
        "{err}"
    );
    assert!(!out.exists(), "nothing was written");
}

/// A `trl-0.7` stage is checked by TRL 0.7.10's rules, not TRL 1.x's: its
/// own loss types are named, and one that only TRL 1.x has is refused.
#[test]
fn a_trl07_stage_checks_its_loss_by_trl_0_7_rules() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = run(&["compat=trl-0.7", "loss_type=kto_pair"], &out).unwrap_err();
    assert!(
        err.contains("recipe_dpo.yaml") && err.contains("kto_pair (TRL 0.7.10) is not implemented"),
        "{err}"
    );
    let err = run(&["compat=trl-0.7", "loss_type=sigmoid_norm"], &out).unwrap_err();
    assert!(
        err.contains("not a TRL 0.7.10 loss type (sigmoid, hinge, ipo)"),
        "{err}"
    );
    assert!(!out.exists(), "nothing was written");
}
