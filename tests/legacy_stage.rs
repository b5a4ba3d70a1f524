//! `align dpo` / `align sft` on the legacy fixture's recipes (`compat:
//! trl-0.7`) reproduce the March-2024 stack's runs end to end: every line of
//! `expected/dpo_train_log.jsonl` / `expected/sft_train_log.jsonl` (the
//! same keys; `loss` to 1e-4 absolute since transformers 4.38 rounds it,
//! every other value to 1e-3 relative or 1e-4 absolute near 0) and the final
//! weights to 1e-4 absolute.

mod common;

use std::path::Path;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::gemma::ActivationRule;
use align::model::hf::load_gemma_with_rule;
use align::recipe::StageKind;
use align::train::run::run_recipe;
use align::train::stage::RunOptions;
use burn::tensor::DType;
use common::{assert_weights_close, fixture, read_jsonl};
use serde_json::Value;

/// Keys of the summary line that depend on the clock or are not computed.
const SUMMARY_SKIPPED: &[&str] = &["train_runtime", "train_steps_per_second", "total_flos"];

fn run(config: &str, kind: StageKind, output: &Path) {
    let set = vec![format!("output_dir={}", output.display())];
    let options = RunOptions {
        quiet: true,
        ..Default::default()
    };
    run_recipe::<CpuTrain>(
        &fixture("tiny-gemma-legacy").join(config),
        &set,
        Some(kind),
        &options,
        true,
        &cpu_device(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn kind_of(line: &Value) -> &'static str {
    if line.get("train_loss").is_some() {
        "summary"
    } else if line.get("eval_loss").is_some() {
        "eval"
    } else {
        "step"
    }
}

/// Line by line: same kinds in the same order, same keys, same values.
fn compare_logs(metrics: &Path, expected: &str) {
    let got = read_jsonl(metrics);
    let want = read_jsonl(&fixture("tiny-gemma-legacy/expected").join(expected));
    let kinds = |lines: &[Value]| lines.iter().map(kind_of).collect::<Vec<_>>();
    assert_eq!(kinds(&got), kinds(&want), "kinds of log lines");
    let (mut worst_rel, mut worst_where) = (0.0f64, String::new());
    let mut worst_loss = 0.0f64;
    for (g, w) in got.iter().zip(&want) {
        let kind = kind_of(w);
        let context = format!("{kind} line of step {}", w["step"]);
        let keys = |line: &Value| {
            let mut keys: Vec<String> = line
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !SUMMARY_SKIPPED.contains(&k.as_str()))
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(g), keys(w), "{context}: keys");
        for key in keys(w) {
            let (a, b) = (g[&key].as_f64().unwrap(), w[&key].as_f64().unwrap());
            let tolerance = if key == "loss" {
                1e-4 + 1e-12
            } else {
                (1e-3 * b.abs()).max(1e-4)
            };
            assert!((a - b).abs() <= tolerance, "{context}: {key} {a} vs {b}");
            if key == "loss" {
                worst_loss = worst_loss.max((a - b).abs());
            }
            if key != "loss" && b.abs() > 1e-2 {
                let rel = (a - b).abs() / b.abs();
                if rel > worst_rel {
                    (worst_rel, worst_where) = (rel, format!("{key}, {context}"));
                }
            }
        }
    }
    println!("worst relative error: {worst_rel:e} ({worst_where}); rounded loss: {worst_loss:e}");
}

fn compare_weights(dir: &Path, expected: &str) {
    let got = load_gemma_with_rule::<Cpu>(
        dir,
        DType::F32,
        ActivationRule::Transformers438,
        &cpu_device(),
    )
    .unwrap();
    let worst = assert_weights_close(
        &got,
        &fixture("tiny-gemma-legacy/expected").join(expected),
        1e-4,
    );
    println!("final weights: worst abs diff {worst:e}");
}

#[test]
fn align_dpo_reproduces_the_trl_0_7_10_run() {
    let out = tempfile::tempdir().unwrap();
    run("recipe_dpo.yaml", StageKind::Dpo, out.path());
    compare_logs(&out.path().join("metrics.jsonl"), "dpo_train_log.jsonl");
    compare_weights(out.path(), "final_policy");
}

#[test]
fn align_sft_reproduces_the_trl_0_7_10_packed_run() {
    let out = tempfile::tempdir().unwrap();
    run("recipe_sft.yaml", StageKind::Sft, out.path());
    compare_logs(&out.path().join("metrics.jsonl"), "sft_train_log.jsonl");
    compare_weights(out.path(), "final_sft");
}
