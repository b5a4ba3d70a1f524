//! `precompute_ref_log_probs: true`: the run still reproduces TRL's log and
//! weights (the reference values are the same numbers, computed earlier),
//! the cache in `output_dir/ref_logps/` is reused by a rerun, and a different
//! reference gets its own cache file instead of stale values.

mod common;

use std::path::{Path, PathBuf};

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::hf::load_gemma;
use align::recipe::StageKind;
use align::train::run::run_recipe;
use align::train::stage::RunOptions;
use burn::tensor::DType;
use common::{assert_weights_close, compare_logs, fixture, read_jsonl};

fn run_dpo(output: &Path, extra: &[String]) {
    let mut set = vec![
        format!("output_dir={}", output.display()),
        "precompute_ref_log_probs=true".to_string(),
    ];
    set.extend_from_slice(extra);
    let options = RunOptions {
        quiet: true,
        ..Default::default()
    };
    let config = fixture("tiny-gemma/recipe_dpo.yaml");
    run_recipe::<CpuTrain>(
        &config,
        &set,
        Some(StageKind::Dpo),
        &options,
        true,
        &cpu_device(),
    )
    .unwrap();
}

fn cache_files(output: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(output.join("ref_logps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn precomputed_reference_reproduces_the_trl_run_and_caches() {
    let out = tempfile::tempdir().unwrap();
    run_dpo(out.path(), &[]);
    let compared = compare_logs(
        &out.path().join("metrics.jsonl"),
        &fixture("tiny-gemma/expected/dpo_train_log.jsonl"),
    );
    let got = read_jsonl(&out.path().join("metrics.jsonl"));
    assert!(compared > 100, "compared {compared} values");
    let model = load_gemma::<Cpu>(out.path(), DType::F32, &cpu_device()).unwrap();
    assert_weights_close(&model, &fixture("tiny-gemma/expected/final_policy"), 1e-4);

    // One file per split; a rerun reads them (same bytes, not rewritten).
    let files = cache_files(out.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let modified = |p: &PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = files.iter().map(modified).collect();
    run_dpo(out.path(), &[]);
    assert_eq!(cache_files(out.path()), files);
    assert_eq!(files.iter().map(modified).collect::<Vec<_>>(), before);
    let rerun = read_jsonl(&out.path().join("metrics.jsonl"));
    let losses = |log: &[serde_json::Value]| -> Vec<f64> {
        log.iter().filter_map(|e| e.get("loss")?.as_f64()).collect()
    };
    assert_eq!(losses(&rerun), losses(&got));

    // Another reference: new keys, so two more files.
    let model_b = format!("ref_model={}", fixture("tiny-gemma/model_b").display());
    run_dpo(out.path(), &["max_steps=1".to_string(), model_b]);
    assert_eq!(cache_files(out.path()).len(), 4);
}
