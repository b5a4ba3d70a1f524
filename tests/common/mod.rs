//! Helpers shared by the integration tests: fixture paths and JSONL reading.
#![allow(dead_code)]

pub mod fake_hub;
pub mod fixture_dpo;

use std::path::PathBuf;

use serde_json::Value;

/// `tests/fixtures/<name>` (copied from the reference fixtures), or
/// `$ALIGN_TEST_FIXTURES/<name>`: the GPU bundle runs these executables on a
/// machine without this source tree, with the fixtures copied beside them.
pub fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("ALIGN_TEST_FIXTURES") {
        Some(root) => PathBuf::from(root).join(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    }
}

/// Every line of a JSONL file, parsed.
pub fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// A JSON array of integers.
pub fn ints(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_i64().expect("integer"))
        .collect()
}

/// A JSON array of numbers.
pub fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

/// Relative error with an absolute floor, for comparing against fixture values.
pub fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-12)
}

/// Asserts that `model`'s parameters equal those of the HF folder `expected`
/// within `tolerance` (max absolute difference per tensor); returns the worst.
pub fn assert_weights_close(
    model: &align::model::gemma::Gemma<align::backend::Cpu>,
    expected: &std::path::Path,
    tolerance: f32,
) -> f32 {
    use align::model::hf::{load_gemma, named_tensors};
    let device = align::backend::cpu_device();
    let want = load_gemma::<align::backend::Cpu>(expected, burn::tensor::DType::F32, &device)
        .unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let mut worst = 0.0f32;
    for ((name, a), (_, b)) in named_tensors(model).iter().zip(named_tensors(&want).iter()) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff <= tolerance, "{name}: max abs diff {diff:e}");
        worst = worst.max(diff);
    }
    worst
}

/// Right-pads `(ids, scored)` sequences (pad id 0, attention 0) into one batch.
pub fn padded_batch(sequences: &[(Vec<i64>, Vec<bool>)]) -> align::train::logps::ScoredBatch {
    let width = sequences
        .iter()
        .map(|(ids, _)| ids.len())
        .max()
        .unwrap_or(0);
    let n = sequences.len();
    let mut batch = align::train::logps::ScoredBatch {
        rows: n,
        width,
        input_ids: vec![0; n * width],
        attention_mask: vec![0; n * width],
        scored: vec![false; n * width],
        positions: None,
    };
    for (r, (ids, scored)) in sequences.iter().enumerate() {
        for (t, (&id, &s)) in ids.iter().zip(scored).enumerate() {
            batch.input_ids[r * width + t] = id;
            batch.attention_mask[r * width + t] = 1;
            batch.scored[r * width + t] = s;
        }
    }
    batch
}

/// The chosen or rejected sequence of a `tokenized.jsonl` row as TRL's
/// collator feeds it: `{side}_input_ids`, scored where the completion mask is 1.
pub fn side_sequence(row: &Value, side: &str) -> (Vec<i64>, Vec<bool>) {
    let ids = ints(&row[format!("{side}_input_ids")]);
    let mask = ints(&row[format!("{side}_completion_mask")]);
    (ids, mask.into_iter().map(|m| m == 1).collect())
}

/// Every numeric value of every expected log line (steps and evals; the
/// summary line's wall-clock and flos fields aside) is in `metrics.jsonl`.
pub fn compare_logs(metrics: &std::path::Path, expected: &std::path::Path) -> usize {
    let mut compared = 0;
    let got = read_jsonl(metrics);
    let want = read_jsonl(expected);
    for w in &want {
        if w.get("train_loss").is_some() {
            let g = got
                .iter()
                .find(|g| g.get("train_loss").is_some())
                .expect("summary line");
            let (a, b) = (
                g["train_loss"].as_f64().unwrap(),
                w["train_loss"].as_f64().unwrap(),
            );
            assert!((a - b).abs() <= 1e-3 * b.abs(), "train_loss {a} vs {b}");
            continue;
        }
        let is_eval = w.get("eval_loss").is_some();
        let g = got
            .iter()
            .find(|g| g.get("step") == w.get("step") && g.get("eval_loss").is_some() == is_eval)
            .unwrap_or_else(|| panic!("no logged line like {w}"));
        for (key, value) in w.as_object().unwrap() {
            let Some(b) = value.as_f64() else { continue };
            let a = g
                .get(key)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{key} missing in {g}"));
            assert!(
                (a - b).abs() <= (1e-3 * b.abs()).max(1e-4),
                "step {}: {key} {a} vs {b}",
                w["step"]
            );
            compared += 1;
        }
    }
    compared
}

/// `metrics.jsonl` of a run in `dir` without its wall-clock fields.
pub fn log_without_clock(dir: &std::path::Path) -> Vec<Value> {
    read_jsonl(&dir.join("metrics.jsonl"))
        .into_iter()
        .map(|mut entry| {
            let map = entry.as_object_mut().unwrap();
            map.retain(|key, _| !key.contains("runtime") && !key.contains("per_second"));
            entry
        })
        .collect()
}
