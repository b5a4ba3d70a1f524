//! `align train|sft|dpo --dry-run`: the plan of the zephyr-7b-gemma recipe
//! from gemma-7b's `config.json` alone, what is missing and where it was
//! sought, the fixture's step count, and the memory estimator against a
//! measured peak.
//!
//! Tests that set `HF_HOME` run the binary as a subprocess: environment
//! variables are process-wide and tests run in parallel threads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use align::model::gemma::GemmaConfig;
use align::plan::memory::{ComputeDtype, ModelShape, Setup, Workload, estimate};
use serde_json::Value;

const GEMMA_7B_PARAMETERS: u64 = 8_537_680_896;

/// google/gemma-7b's `config.json` as published (the keys the plan reads).
const GEMMA_7B_CONFIG: &str = r#"{
  "architectures": ["GemmaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "head_dim": 256,
  "hidden_act": "gelu",
  "hidden_size": 3072,
  "initializer_range": 0.02,
  "intermediate_size": 24576,
  "max_position_embeddings": 8192,
  "model_type": "gemma",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 16,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.38.0.dev0",
  "use_cache": true,
  "vocab_size": 256000
}"#;

const EIGHT_GPUS: &str = "cuda:0,1,2,3,4,5,6,7";

/// An `HF_HOME` whose hub cache holds only gemma-7b's `config.json`, in a
/// snapshot without `refs/main` (as a hand-made cache would be).
fn hf_home_with_gemma_7b_config() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let snapshot = home.path().join("hub/models--google--gemma-7b/snapshots/x");
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    std::fs::write(snapshot.join("config.json"), GEMMA_7B_CONFIG).expect("write config");
    home
}

/// `align ARGS` in the crate root with `HF_HOME` set and no other cache or
/// data folder visible.
fn align(hf_home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_align"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("ALIGN_DATA_DIR")
        .output()
        .expect("run align")
}

fn json_plan(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {pointer}"))
}

fn missing(plan: &Value) -> Vec<String> {
    plan["missing"]
        .as_array()
        .expect("missing is a list")
        .iter()
        .map(|m| m.as_str().expect("text").to_string())
        .collect()
}

#[test]
fn the_zephyr_dpo_config_fits_8_gpus_from_the_config_alone() {
    let home = hf_home_with_gemma_7b_config();
    let dpo = "recipes/zephyr-7b-gemma/dpo/config_full.yaml";
    let args = [
        "train",
        dpo,
        "--dry-run",
        "--format",
        "json",
        "--devices",
        EIGHT_GPUS,
    ];
    let plan = json_plan(&align(home.path(), &args));

    let total = u64_at(&plan, "/per_device_memory_bytes");
    assert!(total < 80_000_000_000, "{total} bytes per device");
    assert_eq!(plan["fits"], Value::Bool(true));
    let parts = plan["per_device_memory_parts"].as_object().expect("parts");
    let sum: u64 = parts.values().map(|v| v.as_u64().expect("bytes")).sum();
    assert_eq!(sum, total, "the parts add up to the total");
    for part in [
        "weights_bytes",
        "reference_model_bytes",
        "activations_bytes",
    ] {
        assert!(parts[part].as_u64().unwrap() > 0, "{part}");
    }

    let stage = &plan["stages"][0];
    assert_eq!(stage["kind"], "dpo");
    assert_eq!(u64_at(stage, "/model/parameters"), GEMMA_7B_PARAMETERS);
    assert_eq!(u64_at(stage, "/devices/count"), 8);
    assert_eq!(stage["memory"]["dtype"], "bf16");
    assert_eq!(stage["memory"]["gradient_checkpointing"], true);
    assert_eq!(u64_at(stage, "/memory/optimizer_shards"), 8);
    assert_eq!(u64_at(stage, "/memory/workload/rows"), 4, "2 pairs x 2");
    assert_eq!(u64_at(stage, "/memory/workload/seq"), 1024);
    assert_eq!(u64_at(stage, "/steps/effective_batch_size"), 128);
    assert!(
        stage["model"]["config_json"]
            .as_str()
            .unwrap()
            .contains("models--google--gemma-7b"),
        "the published SFT model is planned with its base's shapes"
    );
}

#[test]
fn missing_weights_tokenizer_and_data_are_listed_with_where_they_were_sought() {
    let home = hf_home_with_gemma_7b_config();
    let hub = home.path().join("hub");
    let recipe = "recipes/zephyr-7b-gemma/recipe.yaml";
    let plan = json_plan(&align(
        home.path(),
        &[
            "train",
            recipe,
            "--dry-run",
            "--format",
            "json",
            "--devices",
            EIGHT_GPUS,
        ],
    ));
    let missing = missing(&plan);
    let mentions = |what: &str, place: PathBuf| {
        let place = place.display().to_string();
        assert!(
            missing
                .iter()
                .any(|m| m.contains(what) && m.contains(&place)),
            "no `{what}` sought in {place} among {missing:#?}"
        );
    };
    mentions("weights", hub.join("models--google--gemma-7b/snapshots/*"));
    mentions(
        "tokenizer.json",
        hub.join("models--philschmid--gemma-tokenizer-chatml/snapshots/*"),
    );
    mentions(
        "HuggingFaceH4/deita-10k-v0-sft",
        hub.join("datasets--HuggingFaceH4--deita-10k-v0-sft"),
    );
    mentions(
        "argilla/dpo-mix-7k",
        hub.join("datasets--argilla--dpo-mix-7k"),
    );

    let stages = plan["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    // The DPO stage starts from the SFT output: gemma-7b's shapes.
    assert_eq!(u64_at(&stages[1], "/model/parameters"), GEMMA_7B_PARAMETERS);
    assert_eq!(stages[1]["compat"], "trl-0.7");
    assert!(u64_at(&plan, "/per_device_memory_bytes") < 80_000_000_000);
}

#[test]
fn the_text_plan_names_stages_and_the_verdict() {
    let home = hf_home_with_gemma_7b_config();
    let output = align(
        home.path(),
        &[
            "train",
            "recipes/zephyr-7b-gemma/recipe.yaml",
            "--dry-run",
            "--devices",
            EIGHT_GPUS,
        ],
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "stage 1/2: sft",
        "stage 2/2: dpo",
        "8,537,680,896 parameters",
        "gradient checkpointing on",
        "missing (",
        "verdict: fits",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}

#[test]
fn without_any_config_the_plan_still_exits_0_and_says_what_is_missing() {
    let empty = tempfile::tempdir().expect("tempdir");
    let plan = json_plan(&align(
        empty.path(),
        &[
            "dpo",
            "recipes/zephyr-7b-gemma/dpo/config_full.yaml",
            "--dry-run",
            "--format",
            "json",
        ],
    ));
    assert_eq!(plan["per_device_memory_bytes"], Value::Null);
    assert!(
        missing(&plan)
            .iter()
            .any(|m| m.contains("config.json") && m.contains("models--google--gemma-7b")),
        "{:#?}",
        missing(&plan)
    );
}

/// The fixture's DPO run (`expected/dpo_train_log.jsonl`) has 16 steps: 34
/// rows, 2 dropped by TRL's prompt-length filter, batch 2, accumulation 2,
/// 2 epochs.
#[test]
fn the_fixture_plan_has_the_fixture_runs_16_steps() {
    let empty = tempfile::tempdir().expect("tempdir");
    let recipe = common::fixture("tiny-gemma").join("recipe_dpo.yaml");
    let plan = json_plan(&align(
        empty.path(),
        &[
            "dpo",
            recipe.to_str().unwrap(),
            "--dry-run",
            "--format",
            "json",
            "--quiet",
        ],
    ));
    let stage = &plan["stages"][0];
    assert_eq!(u64_at(stage, "/steps/total_optimizer_steps"), 16);
    assert_eq!(u64_at(stage, "/steps/warmup_steps"), 2);
    assert_eq!(u64_at(stage, "/train_examples/examples"), 32);
    assert_eq!(u64_at(stage, "/train_examples/dropped"), 2);
    assert_eq!(stage["memory"]["dtype"], "fp32");
    assert!(missing(&plan).is_empty(), "{:#?}", missing(&plan));
    let logged =
        common::read_jsonl(&common::fixture("tiny-gemma").join("expected/dpo_train_log.jsonl"));
    let last_step = logged.iter().filter_map(|l| l["step"].as_u64()).max();
    assert_eq!(last_step, Some(16));
}

#[test]
fn format_json_without_dry_run_is_refused() {
    let empty = tempfile::tempdir().expect("tempdir");
    let output = align(
        empty.path(),
        &[
            "dpo",
            "recipes/zephyr-7b-gemma/dpo/config_full.yaml",
            "--format",
            "json",
        ],
    );
    assert!(!output.status.success());
}

/// Peak RSS of `benches/dpo_step.rs` (13 DPO optimizer steps of the bench
/// shape: hidden 256, MLP 1024, 4 layers, 4 heads, head_dim 64, vocabulary
/// 768, fp32, a separate reference model), measured 2026-11-27 on the
/// 2-core dev machine with `cargo bench --bench dpo_step --profile dev`
/// (the `peak_rss_bytes` of its JSON line: VmHWM, so it includes the binary
/// and allocator slack): `(pairs, tokens per sequence, checkpointing,
/// bytes)`. The first is the bench as committed, re-measured 2026-11-28
/// after the reference forward moved to its own thread (586 MB; 547 MB
/// before, 506 MB before the full-shape rotary tables and mask); the
/// second the same bench with `PAIRS = 2`, `SEQ = 512`, `PROMPT = 200`
/// (attention scores twice as large), measured 2026-11-27 before that change.
/// The third is the first with `ALIGN_BENCH_CHECKPOINTING=1` (per-layer
/// recomputation, `train::recompute`), measured 2026-11-28 (255 MB).
const BENCH_PEAK_RSS: [(u64, u64, bool, u64); 3] = [
    (4, 256, false, 586_022_912),
    (2, 512, false, 629_137_408),
    (4, 256, true, 255_082_496),
];

#[test]
fn the_estimate_is_within_25_percent_of_the_benchs_measured_peak() {
    let config = GemmaConfig::from_json(
        r#"{"model_type":"gemma","vocab_size":768,"hidden_size":256,"intermediate_size":1024,
        "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":4,"head_dim":64,
        "hidden_activation":"gelu_pytorch_tanh","max_position_embeddings":1024}"#,
    )
    .expect("bench config");
    for (pairs, seq, checkpointing, measured) in BENCH_PEAK_RSS {
        let setup = Setup {
            dtype: ComputeDtype::Fp32,
            shards: 1,
            accumulation: 1,
            checkpointing,
            reference: true,
            runtime_bytes: 0,
        };
        let work = Workload {
            rows: 2 * pairs,
            seq,
        };
        let estimated = estimate(&ModelShape::from_config(&config), &work, &setup);
        let total = estimated.per_device_memory_bytes as f64;
        let error = common::rel_err(total, measured as f64);
        eprintln!(
            "{pairs} pairs x {seq}, checkpointing {checkpointing}: estimate {total} bytes, measured {measured}, error {error:.3}"
        );
        assert!(
            error < 0.25,
            "{pairs} pairs x {seq}: estimate {total} vs measured {measured}"
        );
    }
}
