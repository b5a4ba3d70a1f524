//! Checkpoints and exact resume on the fixture's DPO run (16 steps,
//! `save_steps: 4`): a run stopped after step 6 (as by Ctrl-C) and resumed
//! equals the uninterrupted run bit for bit (every logged value and the final
//! weights), from the interrupt's checkpoint and from an earlier one. Broken
//! checkpoints and changed recipes are refused with the file or key named.

mod common;

use std::path::Path;

use align::backend::{CpuTrain, cpu_device};
use align::recipe::StageKind;
use align::train::resume::ResumeFrom;
use align::train::run::{RunError, run_recipe};
use align::train::stage::RunOptions;
use common::{fixture, log_without_clock as log};
use serde_json::Value;

fn run(output: &Path, extra: &[&str], options: RunOptions) -> Result<(), RunError> {
    let mut set = vec![
        format!("output_dir={}", output.display()),
        "save_strategy=steps".to_string(),
        "save_steps=4".to_string(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let options = RunOptions {
        quiet: true,
        ..options
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
    .map(|_| ())
}

fn resume(from: ResumeFrom) -> RunOptions {
    RunOptions {
        resume: Some(from),
        ..Default::default()
    }
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("checkpoint-") || name.contains(".partial"))
        .collect();
    names.sort();
    names
}

#[test]
fn interrupted_and_resumed_run_equals_the_uninterrupted_run() {
    let straight = tempfile::tempdir().unwrap();
    run(
        straight.path(),
        &["save_total_limit=2"],
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(
        checkpoints(straight.path()),
        ["checkpoint-12", "checkpoint-16"]
    );
    let want_log = log(straight.path());
    let want_weights = weights(straight.path());
    assert!(want_log.len() >= 17, "16 steps, a summary and an eval");

    let broken = tempfile::tempdir().unwrap();
    let stop = RunOptions {
        stop_after_step: Some(6),
        ..Default::default()
    };
    let error = run(broken.path(), &[], stop).unwrap_err().to_string();
    assert!(
        error.contains("interrupted after step 6") && error.contains("--resume"),
        "{error}"
    );
    assert_eq!(checkpoints(broken.path()), ["checkpoint-4", "checkpoint-6"]);
    // transformers can read the state; the folder is a model folder too.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(broken.path().join("checkpoint-6/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["global_step"], 6);
    assert_eq!(state["log_history"].as_array().unwrap().len(), 6);

    run(broken.path(), &[], resume(ResumeFrom::Latest)).unwrap();
    assert_eq!(log(broken.path()), want_log);
    assert_eq!(weights(broken.path()), want_weights);

    // From the earlier checkpoint (mid-way between log lines would be the
    // same: the state carries the unlogged window).
    let earlier = broken.path().join("checkpoint-4");
    run(broken.path(), &[], resume(ResumeFrom::Path(earlier))).unwrap();
    assert_eq!(log(broken.path()), want_log);
    assert_eq!(weights(broken.path()), want_weights);
}

#[test]
fn broken_checkpoints_and_changed_recipes_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let stop = RunOptions {
        stop_after_step: Some(9),
        ..Default::default()
    };
    run(out.path(), &[], stop).unwrap_err();
    assert_eq!(
        checkpoints(out.path()),
        ["checkpoint-4", "checkpoint-8", "checkpoint-9"]
    );

    // Truncated optimizer state in the newest checkpoint.
    let optimizer = out.path().join("checkpoint-9/optimizer.safetensors");
    let bytes = std::fs::read(&optimizer).unwrap();
    std::fs::write(&optimizer, &bytes[..bytes.len() / 2]).unwrap();
    let error = run(out.path(), &[], resume(ResumeFrom::Latest))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("checkpoint-9/optimizer.safetensors"),
        "{error}"
    );

    // A missing file.
    std::fs::remove_file(out.path().join("checkpoint-8/trainer_state.json")).unwrap();
    let from_8 = ResumeFrom::Path(out.path().join("checkpoint-8"));
    let error = run(out.path(), &[], resume(from_8))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("checkpoint-8/trainer_state.json") && error.contains("missing"),
        "{error}"
    );

    // A changed recipe key is named; a harmless one is allowed.
    let from_4 = || ResumeFrom::Path(out.path().join("checkpoint-4"));
    let error = run(out.path(), &["learning_rate=0.002"], resume(from_4()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("learning_rate: 0.001 -> 0.002"), "{error}");
    run(
        out.path(),
        &["logging_steps=2", "max_steps=5"],
        resume(from_4()),
    )
    .unwrap_err();
    run(out.path(), &["logging_steps=2"], resume(from_4())).unwrap();
}

/// bf16 mixed precision resumes exactly too: the checkpoint carries the
/// fp32 master weights (`<name>.master` in `optimizer.safetensors`), which
/// the bf16 `model.safetensors` alone could not restore.
#[test]
fn a_bf16_run_resumes_bit_for_bit_from_its_fp32_masters() {
    let straight = tempfile::tempdir().unwrap();
    run(straight.path(), &["bf16=true"], RunOptions::default()).unwrap();
    let want_log = log(straight.path());
    let want_weights = weights(straight.path());

    let broken = tempfile::tempdir().unwrap();
    let stop = RunOptions {
        stop_after_step: Some(6),
        ..Default::default()
    };
    run(broken.path(), &["bf16=true"], stop).unwrap_err();
    let optimizer = broken.path().join("checkpoint-6/optimizer.safetensors");
    let (_, tensors) = align::model::hf::read_safetensors(&optimizer).unwrap();
    let masters: Vec<_> = tensors
        .iter()
        .filter(|(name, _)| name.ends_with(".master"))
        .collect();
    assert!(!masters.is_empty(), "no master weights saved");
    assert!(
        masters
            .iter()
            .all(|(_, t)| t.dtype == burn::tensor::DType::F32)
    );
    run(broken.path(), &["bf16=true"], resume(ResumeFrom::Latest)).unwrap();
    assert_eq!(log(broken.path()), want_log);
    assert_eq!(weights(broken.path()), want_weights);
}
