//! `train::logps` on the fixture: summed completion log-probs, and the
//! logits statistics behind TRL's `logits/*` metrics, match
//! `expected/logps.jsonl` (transformers 5.24 + TRL 1.16 fused LM head).

mod common;

use align::backend::{Cpu, cpu_device};
use align::model::hf::load_gemma;
use align::train::logps::{ScoredBatch, sequence_logps};
use burn::tensor::DType;
use common::{fixture, padded_batch, read_jsonl, rel_err, side_sequence};
use serde_json::Value;

/// chosen and rejected of one tokenized row as a right-padded batch of two.
fn pair_batch(row: &Value) -> ScoredBatch {
    padded_batch(&[side_sequence(row, "chosen"), side_sequence(row, "rejected")])
}

#[test]
fn summed_logps_and_mean_logits_match_the_fixture() {
    let dir = fixture("tiny-gemma/expected");
    let tokenized = read_jsonl(&dir.join("tokenized.jsonl"));
    let expected = read_jsonl(&dir.join("logps.jsonl"));
    let device = cpu_device();
    for (model_dir, prefix) in [("tiny-gemma/model", ""), ("tiny-gemma/model_b", "model_b_")] {
        let model = load_gemma::<Cpu>(&fixture(model_dir), DType::F32, &device).unwrap();
        let (mut worst_logps, mut worst_logits) = (0.0f64, 0.0f64);
        for (row, want) in tokenized.iter().zip(&expected) {
            if row["dropped"].as_bool().unwrap() {
                continue;
            }
            let out = sequence_logps(&model, &pair_batch(row), &device);
            let sums = out.sums.into_data().to_vec::<f32>().unwrap();
            for (i, side) in ["chosen", "rejected"].iter().enumerate() {
                let key = |k: &str| want[format!("{prefix}{side}_{k}")].as_f64().unwrap();
                let stats = out.stats[i];
                assert_eq!(stats.tokens as f64, key("completion_tokens"));
                let e = rel_err(sums[i] as f64, key("logps"));
                assert!(
                    e <= 1e-4,
                    "row {} {prefix}{side}: logps rel err {e:e}",
                    row["row"]
                );
                worst_logps = worst_logps.max(e);
                // logits sums are small (~0.3): compare absolutely.
                let d = (stats.mean_logits_sum - key("logits_sum")).abs();
                assert!(
                    d <= 1e-5,
                    "row {} {prefix}{side}: logits sum abs err {d:e}",
                    row["row"]
                );
                worst_logits = worst_logits.max(d);
            }
        }
        println!(
            "{model_dir}: worst logps rel err {worst_logps:e}, worst logits-sum abs err {worst_logits:e}"
        );
    }
}
