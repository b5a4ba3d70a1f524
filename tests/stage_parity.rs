//! `align dpo` / `align sft` / `align train` end to end on the fixture
//! recipes: data pipeline, trainer and checkpoint writer together reproduce
//! TRL 1.16's logs (every step and the final eval line, 1e-3 relative or
//! 1e-4 absolute near 0) and final weights (1e-4 absolute), and write
//! `metrics.jsonl`, `runs/`, `recipe.yaml` and a loadable HF folder.

mod common;

use std::path::Path;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::hf::load_gemma;
use align::recipe::StageKind;
use align::train::run::{StageResult, run_recipe};
use align::train::stage::RunOptions;
use burn::tensor::DType;
use common::{assert_weights_close, compare_logs, fixture, read_jsonl};
use serde_json::Value;

fn run(config: &Path, kind: Option<StageKind>, output: &Path) -> Vec<StageResult> {
    let set = vec![format!("output_dir={}", output.display())];
    run_recipe::<CpuTrain>(
        config,
        &set,
        kind,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        true,
        &cpu_device(),
    )
    .unwrap()
}

fn compare_weights(dir: &Path, expected: &Path) {
    let got = load_gemma::<Cpu>(dir, DType::F32, &cpu_device()).unwrap();
    assert_weights_close(&got, expected, 1e-4);
}

#[test]
fn align_dpo_reproduces_the_trl_run() {
    let out = tempfile::tempdir().unwrap();
    run(
        &fixture("tiny-gemma/recipe_dpo.yaml"),
        Some(StageKind::Dpo),
        out.path(),
    );
    compare_logs(
        &out.path().join("metrics.jsonl"),
        &fixture("tiny-gemma/expected/dpo_train_log.jsonl"),
    );
    compare_weights(out.path(), &fixture("tiny-gemma/expected/final_policy"));
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "recipe.yaml",
        "generation_config.json",
    ] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let events = std::fs::read_dir(out.path().join("runs")).unwrap().count();
    assert!(events >= 1, "TensorBoard event file under runs/");
}

#[test]
fn align_sft_reproduces_the_trl_run() {
    let out = tempfile::tempdir().unwrap();
    run(
        &fixture("tiny-gemma/recipe_sft.yaml"),
        Some(StageKind::Sft),
        out.path(),
    );
    compare_logs(
        &out.path().join("metrics.jsonl"),
        &fixture("tiny-gemma/expected/sft_train_log.jsonl"),
    );
    compare_weights(out.path(), &fixture("tiny-gemma/expected/final_sft"));
    // The recipe's chat_template travels with the saved tokenizer.
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert!(
        config["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
}

#[test]
fn align_train_chains_sft_then_dpo_from_the_sft_output() {
    let dir = tempfile::tempdir().unwrap();
    let sft_out = dir.path().join("sft");
    let dpo_out = dir.path().join("dpo");
    let fixture_dir = fixture("tiny-gemma");
    let recipe = format!(
        "stages:\n  - sft: {sft}\n  - dpo: {dpo}\n",
        sft = fixture_dir.join("recipe_sft.yaml").display(),
        dpo = fixture_dir.join("recipe_dpo.yaml").display(),
    );
    let path = dir.path().join("recipe.yaml");
    std::fs::write(&path, recipe).unwrap();
    let set = vec![
        format!("sft.output_dir={}", sft_out.display()),
        format!("dpo.output_dir={}", dpo_out.display()),
        "sft.max_steps=2".to_string(),
        "dpo.max_steps=2".to_string(),
    ];
    let results = run_recipe::<CpuTrain>(
        &path,
        &set,
        None,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        false,
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(results.len(), 2);
    // The DPO stage started from the SFT output: its recorded recipe says so,
    // and its step-1 loss is ln 2 (policy = reference = the SFT model).
    let dpo_recipe = std::fs::read_to_string(dpo_out.join("recipe.yaml")).unwrap();
    assert!(
        dpo_recipe.contains(&sft_out.display().to_string()),
        "{dpo_recipe}"
    );
    let first = &read_jsonl(&dpo_out.join("metrics.jsonl"))[0];
    assert!((first["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    // A second run skips both finished stages.
    let again = run_recipe::<CpuTrain>(
        &path,
        &set,
        None,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        false,
        &cpu_device(),
    )
    .unwrap();
    assert!(
        again
            .iter()
            .all(|r| matches!(r, StageResult::Skipped { .. }))
    );
}

#[test]
fn align_eval_of_trls_final_policy_reproduces_trls_final_eval() {
    let out = tempfile::tempdir().unwrap();
    let set = vec![
        format!("output_dir={}", out.path().display()),
        format!(
            "model_name_or_path={}",
            fixture("tiny-gemma/expected/final_policy").display()
        ),
        format!(
            "tokenizer_name_or_path={}",
            fixture("tiny-gemma/model").display()
        ),
        format!("ref_model={}", fixture("tiny-gemma/model").display()),
    ];
    let options = RunOptions {
        quiet: true,
        eval_only: true,
        ..Default::default()
    };
    let results = run_recipe::<CpuTrain>(
        &fixture("tiny-gemma/recipe_dpo.yaml"),
        &set,
        Some(StageKind::Dpo),
        &options,
        true,
        &cpu_device(),
    )
    .unwrap();
    let StageResult::Ran(outcome) = &results[0] else {
        panic!("eval ran")
    };
    let got = outcome.history.last().unwrap();
    let want = read_jsonl(&fixture("tiny-gemma/expected/dpo_train_log.jsonl"))
        .pop()
        .unwrap();
    for key in [
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
        "eval_logps/chosen",
        "eval_entropy",
    ] {
        let (a, b) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= (1e-3 * b.abs()).max(1e-4),
            "{key} {a} vs {b}"
        );
    }
    assert!(
        !out.path().join("model.safetensors").exists(),
        "eval saves no model"
    );
}
