//! `align generate` against transformers: the prompt ids from the chat
//! template and the greedy continuation of the fixture model equal what
//! transformers' `generate` produced (tests/fixtures/generation/greedy.json,
//! made by scripts/oracle_generate.py); the KV-cache logits equal those of a
//! full forward over the same tokens.

mod common;

use align::backend::{Cpu, cpu_device};
use align::data::Message;
use align::generate::{Generator, SamplingSettings};
use align::model::gemma::{ForwardInput, KvCache};
use burn::tensor::{Int, Tensor, TensorData};
use common::{fixture, ints};
use serde_json::Value;

fn truth() -> Value {
    let path = fixture("generation/greedy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn generator() -> Generator<Cpu> {
    Generator::load(&fixture("tiny-gemma/model"), &cpu_device()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    ints(value).into_iter().map(|i| i as u32).collect()
}

#[test]
fn greedy_generation_equals_transformers() {
    let truth = truth();
    let generator = generator();
    let mut stops = ids(&truth["stop_ids"]);
    stops.sort_unstable();
    assert_eq!(generator.stop_ids(), stops);
    for case in truth["cases"].as_array().unwrap() {
        let message = Message {
            role: "user".into(),
            content: case["prompt"].as_str().unwrap().into(),
        };
        let prompt_ids = generator.prompt_ids(&[message]).unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]));
        let settings = SamplingSettings {
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let mut streamed = String::new();
        let generation = generator
            .generate(&prompt_ids, &settings, &mut |piece| {
                streamed.push_str(piece)
            })
            .unwrap();
        assert_eq!(
            generation.ids,
            ids(&case["generated_ids"]),
            "{}",
            case["prompt"]
        );
        assert_eq!(streamed, generation.text, "streamed pieces make the reply");
    }
}

#[test]
fn kv_cache_logits_equal_full_forward_logits() {
    let generator = generator();
    let case = &truth()["cases"][0];
    let mut tokens = ids(&case["prompt_ids"]);
    tokens.extend(ids(&case["generated_ids"]));
    let device = cpu_device();
    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    let input = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &device);
    let full = generator.model.forward(ForwardInput::new(input, None));
    let vocab = full.dims()[2];
    let full: Vec<f32> = full.into_data().to_vec().unwrap();

    // The prompt in one cached step, then one token at a time.
    let prompt = case["prompt_ids"].as_array().unwrap().len();
    let mut cache = KvCache::default();
    let mut worst = 0.0f32;
    let mut check = |position: usize, cached: Vec<f32>| {
        let want = &full[position * vocab..(position + 1) * vocab];
        for (a, b) in cached.iter().zip(want) {
            worst = worst.max((a - b).abs());
        }
    };
    check(prompt - 1, generator.step(&tokens[..prompt], &mut cache));
    for position in prompt..tokens.len() {
        check(
            position,
            generator.step(&tokens[position..=position], &mut cache),
        );
    }
    assert_eq!(cache.len, tokens.len());
    assert!(worst <= 1e-5, "max |cached - full| = {worst}");
}

/// The command line: a JSONL of prompts in, a JSONL of answers out.
#[test]
fn align_generate_answers_a_prompts_file() {
    let truth = truth();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    let cases = truth["cases"].as_array().unwrap();
    let lines: Vec<String> = cases
        .iter()
        .map(|c| serde_json::json!({ "prompt": c["prompt"] }).to_string())
        .collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let output = dir.path().join("answers.jsonl");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_align"))
        .args(["generate", "--model"])
        .arg(fixture("tiny-gemma/model"))
        .arg("--prompts")
        .arg(&prompts)
        .arg("--output")
        .arg(&output)
        .args(["--max-new-tokens", "24"])
        .status()
        .unwrap();
    assert!(status.success());
    let answers = common::read_jsonl(&output);
    assert_eq!(answers.len(), cases.len());
    for (answer, case) in answers.iter().zip(cases) {
        assert_eq!(answer["prompt"], case["prompt"]);
        assert_eq!(ids(&answer["completion_ids"]), ids(&case["generated_ids"]));
    }
}

/// `generate` and `eval` run on the backend the user names, never silently
/// on the CPU: on a build without the `cuda` feature, `--backend cuda` is
/// refused by both (before, both ran on the CPU whatever was asked).
#[cfg(not(feature = "cuda"))]
#[test]
fn generate_and_eval_honour_the_backend_asked_for() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_align"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} ran");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let model = fixture("tiny-gemma/model");
    let model = model.to_str().unwrap();
    let recipe = fixture("tiny-gemma/recipe_dpo.yaml");
    let recipe = recipe.to_str().unwrap();
    for args in [
        vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "Hi",
            "--backend",
            "cuda",
        ],
        vec!["eval", recipe, "--backend", "cuda"],
    ] {
        let stderr = run(&args);
        assert!(
            stderr.contains("built without the `cuda` feature"),
            "{args:?}: {stderr}"
        );
    }
    let stderr = run(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "Hi",
        "--device",
        "cpu:0,cpu:1",
    ]);
    assert!(stderr.contains("runs on one device"), "{stderr}");
}
