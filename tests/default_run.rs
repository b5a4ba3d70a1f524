//! The README's first command, shortened: `align train recipes/tiny/recipe.yaml`
//! runs SFT from random init and then DPO from the SFT output on the shipped
//! data, tokenizer and config (a few steps each here; the full run is the
//! README's command).

mod common;

use std::path::PathBuf;

use align::backend::{CpuTrain, cpu_device};
use align::train::run::{StageResult, run_recipe};
use align::train::stage::RunOptions;
use common::read_jsonl;

#[test]
fn the_default_recipe_runs_sft_then_dpo_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let (sft, dpo) = (out.path().join("sft"), out.path().join("dpo"));
    let set = vec![
        format!("sft.output_dir={}", sft.display()),
        format!("dpo.output_dir={}", dpo.display()),
        "sft.max_steps=3".to_string(),
        "dpo.max_steps=3".to_string(),
        "sft.do_eval=false".to_string(),
        "sft.eval_strategy=no".to_string(),
        "dpo.eval_strategy=no".to_string(),
        "dpo.logging_steps=1".to_string(),
    ];
    let results = run_recipe::<CpuTrain>(
        &root.join("recipes/tiny/recipe.yaml"),
        &set,
        None,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        true,
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| matches!(r, StageResult::Ran(_))));
    for dir in [&sft, &dpo] {
        assert!(dir.join("model.safetensors").is_file(), "{}", dir.display());
        assert!(dir.join("tokenizer_config.json").is_file());
    }
    // SFT starts from random init: the loss of step 1 is about ln(vocab).
    let sft_log = read_jsonl(&sft.join("metrics.jsonl"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sft.join("config.json")).unwrap()).unwrap();
    let ln_vocab = (config["vocab_size"].as_f64().unwrap()).ln();
    let first = sft_log[0]["loss"].as_f64().unwrap();
    assert!(
        (first - ln_vocab).abs() < 0.5,
        "step-1 SFT loss {first} vs ln(vocab) {ln_vocab}"
    );
    // DPO starts from the SFT model as policy and reference: the eval before
    // training (eval_on_start) has zero rewards, so no pair is ranked right
    // (accuracy counts strict wins). Its loss is the sigmoid term's ln 2
    // plus the recipe's `sft` term, the chosen answers' NLL per token: more
    // than 0 and at most the NLL of a whole answer (`-logps/chosen`).
    let dpo_log = read_jsonl(&dpo.join("metrics.jsonl"));
    let before = &dpo_log[0];
    assert_eq!(before["step"], 0);
    assert_eq!(before["eval_rewards/accuracies"].as_f64(), Some(0.0));
    assert_eq!(before["eval_rewards/margins"].as_f64(), Some(0.0));
    let sft_term = before["eval_loss"].as_f64().unwrap() - std::f64::consts::LN_2;
    let answer_nll = -before["eval_logps/chosen"].as_f64().unwrap();
    assert!(
        sft_term > 0.0 && sft_term <= answer_nll + 1e-6,
        "eval loss - ln 2 = {sft_term} vs answer NLL {answer_nll}"
    );
    // Without the `sft` term the first step's loss is exactly ln 2.
    let sigmoid_only = run_recipe::<CpuTrain>(
        &root.join("recipes/tiny/recipe.yaml"),
        &[
            set.as_slice(),
            &[
                format!(
                    "dpo.output_dir={}",
                    out.path().join("dpo-sigmoid").display()
                ),
                "dpo.loss_type=sigmoid".to_string(),
                "dpo.loss_weights=[1.0]".to_string(),
                "dpo.max_steps=1".to_string(),
            ],
        ]
        .concat(),
        None,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        false, // the finished SFT stage is skipped
        &cpu_device(),
    )
    .unwrap();
    assert!(matches!(
        sigmoid_only.as_slice(),
        [StageResult::Skipped { .. }, StageResult::Ran(_)]
    ));
    let sigmoid_log = read_jsonl(&out.path().join("dpo-sigmoid/metrics.jsonl"));
    let first_step = sigmoid_log
        .iter()
        .find(|e| e.get("loss").is_some())
        .unwrap();
    assert!((first_step["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    assert!(
        dpo_log
            .iter()
            .any(|e| e.get("eval_rewards/accuracies").is_some())
    );
}
