//! Forward parity with transformers: the summed completion log-probs of the
//! fixture models on TRL's token ids match `expected/logps.jsonl`
//! (transformers 5.24, fp32, eager attention) to 1e-4 relative, and every
//! per-token log-prob to 1e-4 absolute, alone and in right-padded batches.

mod common;

use align::backend::{Cpu, cpu_device};
use align::model::gemma::{ForwardInput, Gemma};
use align::model::hf::load_gemma;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{fixture, floats, ints, read_jsonl, rel_err};
use serde_json::Value;

/// One sequence to score: token ids and which of them are completion tokens.
struct Sequence {
    ids: Vec<i64>,
    completion: Vec<i64>,
}

/// Per-token log-probs of the completion tokens of each sequence, computed in
/// one right-padded batch (pad id 0, attention mask 0 on padding).
fn completion_token_logps(model: &Gemma<Cpu>, batch: &[Sequence]) -> Vec<Vec<f64>> {
    let device = cpu_device();
    let width = batch.iter().map(|s| s.ids.len()).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for seq in batch {
        let pad = width - seq.ids.len();
        ids.extend(seq.ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
        mask.extend(std::iter::repeat_n(1i64, seq.ids.len()).chain(std::iter::repeat_n(0, pad)));
    }
    let rows = batch.len();
    let input_ids =
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.clone(), [rows, width]), &device);
    let logits = model.forward(ForwardInput::new(input_ids, Some(mask)));
    let logps = log_softmax(logits, 2);
    let vocab = logps.dims()[2];
    let values = logps.into_data().to_vec::<f32>().unwrap();
    batch
        .iter()
        .enumerate()
        .map(|(r, seq)| {
            (1..seq.ids.len())
                .filter(|&t| seq.completion[t] == 1)
                .map(|t| {
                    let token = seq.ids[t] as usize;
                    values[(r * width + t - 1) * vocab + token] as f64
                })
                .collect()
        })
        .collect()
}

fn pair(row: &Value) -> [Sequence; 2] {
    ["chosen", "rejected"].map(|side| Sequence {
        ids: ints(&row[format!("{side}_input_ids")]),
        completion: ints(&row[format!("{side}_completion_mask")]),
    })
}

/// Rows kept by TRL, with their expected log-prob record.
fn kept_rows() -> Vec<(Value, Value)> {
    let dir = fixture("tiny-gemma/expected");
    let tokenized = read_jsonl(&dir.join("tokenized.jsonl"));
    let logps = read_jsonl(&dir.join("logps.jsonl"));
    assert_eq!(tokenized.len(), logps.len());
    tokenized
        .into_iter()
        .zip(logps)
        .filter(|(t, _)| !t["dropped"].as_bool().unwrap())
        .collect()
}

/// Compares one sequence's log-probs with the fixture; returns (max token abs err, sum rel err).
fn check(got: &[f64], expected: &Value, prefix: &str, side: &str) -> (f64, f64) {
    let tokens = floats(&expected[format!("{prefix}{side}_token_logps")]);
    let sum = expected[format!("{prefix}{side}_logps")].as_f64().unwrap();
    assert_eq!(
        got.len(),
        tokens.len(),
        "row {}: completion length",
        expected["row"]
    );
    let token_err = got
        .iter()
        .zip(&tokens)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    let sum_err = rel_err(got.iter().sum(), sum);
    assert!(
        token_err <= 1e-4,
        "row {} {prefix}{side}: per-token abs err {token_err:e}",
        expected["row"]
    );
    assert!(
        sum_err <= 1e-4,
        "row {} {prefix}{side}: sum rel err {sum_err:e}",
        expected["row"]
    );
    (token_err, sum_err)
}

fn parity_for(model_dir: &str, prefix: &str) {
    let model = load_gemma::<Cpu>(&fixture(model_dir), DType::F32, &cpu_device()).unwrap();
    let (mut worst_token, mut worst_sum) = (0.0f64, 0.0f64);
    let rows = kept_rows();
    for (tokenized, expected) in &rows {
        let got = completion_token_logps(&model, &pair(tokenized));
        for (side, values) in ["chosen", "rejected"].iter().zip(&got) {
            let (t, s) = check(values, expected, prefix, side);
            worst_token = worst_token.max(t);
            worst_sum = worst_sum.max(s);
        }
    }
    println!(
        "{model_dir}: {} rows, worst per-token abs err {worst_token:e}, worst sum rel err {worst_sum:e}",
        rows.len()
    );
}

#[test]
fn model_logps_match_transformers() {
    parity_for("tiny-gemma/model", "");
}

#[test]
fn model_b_logps_match_transformers() {
    parity_for("tiny-gemma/model_b", "model_b_");
}

#[test]
fn right_padded_batches_give_the_same_logps() {
    let model = load_gemma::<Cpu>(&fixture("tiny-gemma/model"), DType::F32, &cpu_device()).unwrap();
    let rows = kept_rows();
    // Five pairs of different lengths (10 sequences) in one batch, padded to the longest.
    for chunk in rows.chunks(5) {
        let batch: Vec<Sequence> = chunk.iter().flat_map(|(t, _)| pair(t)).collect();
        let lengths: std::collections::BTreeSet<usize> =
            batch.iter().map(|s| s.ids.len()).collect();
        let got = completion_token_logps(&model, &batch);
        for (i, (_, expected)) in chunk.iter().enumerate() {
            check(&got[2 * i], expected, "", "chosen");
            check(&got[2 * i + 1], expected, "", "rejected");
        }
        assert!(
            lengths.len() > 1 || chunk.len() == 1,
            "batch should mix lengths"
        );
    }
}
