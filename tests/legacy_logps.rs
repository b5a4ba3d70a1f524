//! `compat: trl-0.7` log-probs, loss and metrics against the legacy
//! fixture, with TRL 0.7.10's own tokenization (`expected/tokenized.jsonl`)
//! as input and the models loaded by transformers 4.38.2's activation rule:
//! - `expected/logps.jsonl`: every row as a batch of one pair, for `model`
//!   and `model_b`: summed completion log-probs, TRL 0.7.10's `logits/*`
//!   (mean of the whole padded logits tensor, and of the unpadded
//!   sequence), and the single-pair loss and rewards of `model_b` vs `model`;
//! - `expected/dpo_batches_model_b.jsonl`: every micro-batch of epoch 1,
//!   policy `model_b`, reference `model`: loss and the 8 TRL 0.7.10 metrics.

mod common;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::gemma::{ActivationRule, Gemma};
use align::model::hf::load_gemma_with_rule;
use align::train::logps::sequence_logps;
use align::train::objective::Objective;
use align::train::preference::{PreferenceBatch, Reference};
use align::train::trl07::loss::{Trl07Loss, Trl07LossKind};
use align::train::trl07::preference::Trl07DpoObjective;
use burn::module::AutodiffModule;
use burn::tensor::DType;
use common::{fixture, ints, padded_batch, read_jsonl};
use serde_json::Value;

const BETA: f64 = 0.05;

fn model<B: burn::tensor::backend::Backend<Device = burn::tensor::Device<Cpu>>>(
    name: &str,
) -> Gemma<B> {
    let dir = fixture("tiny-gemma-legacy").join(name);
    load_gemma_with_rule::<B>(
        &dir,
        DType::F32,
        ActivationRule::Transformers438,
        &cpu_device(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn expected(name: &str) -> Vec<Value> {
    read_jsonl(&fixture("tiny-gemma-legacy/expected").join(name))
}

/// A side of a tokenized row: its ids, scored where TRL's label is not -100.
fn side(row: &Value, side: &str) -> (Vec<i64>, Vec<bool>) {
    let ids = ints(&row[format!("{side}_input_ids")]);
    let labels = ints(&row[format!("{side}_labels")]);
    (ids, labels.iter().map(|&l| l != -100).collect())
}

/// Pairs as TRL's `concatenated_forward` stacks them: chosen rows, then
/// rejected rows, all right-padded to the widest.
fn preference_batch(rows: &[&Value]) -> PreferenceBatch {
    let sequences: Vec<_> = ["chosen", "rejected"]
        .iter()
        .flat_map(|s| rows.iter().map(move |row| side(row, s)))
        .collect();
    PreferenceBatch {
        pairs: rows.len(),
        sequences: padded_batch(&sequences),
        reference_logps: None,
    }
}

fn objective() -> Trl07DpoObjective<CpuTrain> {
    Trl07DpoObjective {
        reference: Reference::Model(Box::new(model::<Cpu>("model"))),
        device: cpu_device(),
        loss: Trl07Loss {
            kind: Trl07LossKind::Sigmoid,
            beta: BETA,
            label_smoothing: 0.0,
        },
        accumulation: 2,
    }
}

/// Worst absolute error seen per quantity, printed at the end.
#[derive(Default)]
struct Worst(Vec<(String, f64)>);

impl Worst {
    fn check(&mut self, what: &str, got: f64, want: f64, tolerance: f64, context: &str) {
        let err = (got - want).abs();
        assert!(err <= tolerance, "{context}: {what} {got} vs {want}");
        match self.0.iter_mut().find(|(k, _)| k == what) {
            Some((_, worst)) => *worst = worst.max(err),
            None => self.0.push((what.to_string(), err)),
        }
    }
}

impl Drop for Worst {
    fn drop(&mut self) {
        for (what, err) in &self.0 {
            println!("worst abs error {what}: {err:e}");
        }
    }
}

#[test]
fn single_pair_logps_logits_and_loss_match_trl_0_7_10() {
    let rows = expected("tokenized.jsonl");
    let want = expected("logps.jsonl");
    let device = cpu_device();
    let models = [
        ("", model::<Cpu>("model")),
        ("model_b_", model::<Cpu>("model_b")),
    ];
    let mut worst = Worst::default();
    for (row, w) in rows.iter().zip(&want) {
        let context = format!("row {}", w["row"]);
        let batch = preference_batch(&[row]);
        assert_eq!(
            batch.sequences.width as u64,
            w["padded_len"].as_u64().unwrap()
        );
        let mut sums = Vec::new();
        for (prefix, model) in &models {
            let out = sequence_logps(model, &batch.sequences, &device);
            let got = out.sums.into_data().to_vec::<f32>().unwrap();
            for (i, s) in ["chosen", "rejected"].iter().enumerate() {
                let key = |k: &str| w[format!("{prefix}{s}_{k}")].as_f64().unwrap();
                // Sums of ~100 fp32 terms of up to ~400: 1e-4 absolute.
                worst.check("logps", f64::from(got[i]), key("logps"), 1e-4, &context);
                let stats = out.stats[i];
                let width = batch.sequences.width as f64;
                worst.check(
                    "logits_mean (padded pair)",
                    stats.position_logits_sum / width,
                    key("logits_mean"),
                    1e-5,
                    &context,
                );
                let alone = preference_batch_side(row, s);
                let unpadded = sequence_logps(model, &alone, &device).stats[0];
                worst.check(
                    "logits_mean_unpadded",
                    unpadded.position_logits_sum / alone.width as f64,
                    key("logits_mean_unpadded"),
                    1e-5,
                    &context,
                );
                assert_eq!(
                    stats.tokens as f64,
                    w[format!("{s}_completion_tokens")].as_f64().unwrap()
                );
            }
            sums.push(got);
        }
        let (reference, policy) = (&sums[0], &sums[1]);
        let chosen = BETA * f64::from(policy[0] - reference[0]);
        let rejected = BETA * f64::from(policy[1] - reference[1]);
        let key = |k: &str| w[k].as_f64().unwrap();
        worst.check(
            "chosen reward",
            chosen,
            key("chosen_reward_b_vs_model"),
            1e-5,
            &context,
        );
        worst.check(
            "rejected reward",
            rejected,
            key("rejected_reward_b_vs_model"),
            1e-5,
            &context,
        );
        let loss = (1.0 + (-(chosen - rejected)).exp()).ln();
        worst.check("loss", loss, key("loss_b_vs_model"), 1e-5, &context);
    }
}

/// One side of a row alone, unpadded.
fn preference_batch_side(row: &Value, s: &str) -> align::train::logps::ScoredBatch {
    padded_batch(&[side(row, s)])
}

#[test]
fn every_micro_batch_matches_trl_0_7_10_for_model_b_against_model() {
    let rows = expected("tokenized.jsonl");
    let want = expected("dpo_batches_model_b.jsonl");
    assert_eq!(want.len(), 17);
    let mut objective = objective();
    let policy = model::<CpuTrain>("model_b").valid();
    let mut worst = Worst::default();
    for w in &want {
        let indices = ints(&w["train_indices"]);
        let picked: Vec<&Value> = indices.iter().map(|&i| &rows[i as usize]).collect();
        let batch = preference_batch(&picked);
        assert_eq!(
            batch.sequences.width as u64,
            w["padded_len"].as_u64().unwrap()
        );
        let context = format!("batch {}", w["batch_index"]);
        let (loss, metrics) = objective.eval_loss(&policy, &batch);
        worst.check("loss", loss, w["loss"].as_f64().unwrap(), 1e-5, &context);
        let mut keys: Vec<&String> = metrics.keys().collect();
        keys.sort();
        assert_eq!(keys.len(), 8, "TRL 0.7.10 logs 8 metrics: {keys:?}");
        for (key, value) in &metrics {
            let expected = w[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} not in fixture"));
            // Summed log-probs (|x| ~ 200): 1e-4 absolute, the rest 1e-5.
            let tolerance = if key.starts_with("logps/") {
                1e-4
            } else {
                1e-5
            };
            worst.check(key, *value, expected, tolerance, &context);
        }
    }
}
