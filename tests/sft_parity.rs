//! SFT against TRL 1.16's SFTTrainer on the fixture, with TRL's own
//! tokenization (`expected/sft_tokenized.jsonl`) as input: every step of
//! `expected/sft_train_log.jsonl` to 1e-3 relative (1e-4 absolute near 0),
//! and `expected/final_sft` weights to 1e-4 absolute.

mod common;

use align::backend::{CpuTrain, cpu_device};
use align::log::History;
use align::model::hf::load_gemma;
use align::train::accounting::StepRules;
use align::train::adamw::AdamWConfig;
use align::train::logps::ScoredBatch;
use align::train::schedule::{Schedule, ScheduleKind};
use align::train::sft::SftObjective;
use align::train::trainer::{LoopSettings, Trainer};
use burn::module::AutodiffModule;
use burn::tensor::DType;
use common::{assert_weights_close, fixture, ints, padded_batch, read_jsonl};
use serde_json::Value;

/// Labels are unshifted: token t (t > 0) is scored where its label is not -100.
fn sft_batch(rows: &[Value]) -> ScoredBatch {
    let sequences: Vec<(Vec<i64>, Vec<bool>)> = rows
        .iter()
        .map(|row| {
            let scored = ints(&row["labels"])
                .iter()
                .enumerate()
                .map(|(t, &l)| t > 0 && l != -100)
                .collect();
            (ints(&row["input_ids"]), scored)
        })
        .collect();
    padded_batch(&sequences)
}

#[test]
fn eight_step_run_matches_trl_log_and_final_weights() {
    let rows = read_jsonl(&fixture("tiny-gemma/expected/sft_tokenized.jsonl"));
    let train: Vec<ScoredBatch> = rows.chunks(2).map(sft_batch).collect();
    let settings = LoopSettings {
        total_steps: 8,
        accumulation: 2,
        schedule: Schedule {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-3,
            warmup_steps: 1,
            total_steps: 8,
        },
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        logging_steps: 1,
        logging_first_step: false,
        rules: StepRules::Transformers5,
        eval_every: None,
        eval_each_epoch: false,
        eval_at_end: false,
    };
    let device = cpu_device();
    let mut objective = SftObjective::<CpuTrain> { device };
    let mut history = History::default();
    let model = load_gemma::<CpuTrain>(&fixture("tiny-gemma/model"), DType::F32, &device).unwrap();
    let mut trainer = Trainer::new(settings, &mut objective, &mut history);
    let epochs = |_: usize| train.clone();
    let (model, _) = trainer.fit(model, &epochs, &[]).unwrap();

    let expected = read_jsonl(&fixture("tiny-gemma/expected/sft_train_log.jsonl"));
    let mut worst = (0.0f64, String::new());
    for want in expected.iter().filter(|e| e.get("loss").is_some()) {
        let got = history
            .0
            .iter()
            .find(|g| g.get("step") == want.get("step") && g.contains_key("loss"))
            .unwrap_or_else(|| panic!("no line for step {}", want["step"]));
        for (key, value) in want.as_object().unwrap() {
            let Some(w) = value.as_f64() else { continue };
            let g = got[key].as_f64().unwrap_or_else(|| panic!("{key} missing"));
            assert!(
                (g - w).abs() <= (1e-3 * w.abs()).max(1e-4),
                "step {}: {key} {g} vs {w}",
                want["step"]
            );
            if w.abs() > 1e-2 && (g - w).abs() / w.abs() > worst.0 {
                worst = (
                    (g - w).abs() / w.abs(),
                    format!("{key} at step {}", want["step"]),
                );
            }
        }
    }
    println!("worst relative error: {:e} ({})", worst.0, worst.1);

    let worst_weight = assert_weights_close(
        &model.valid(),
        &fixture("tiny-gemma/expected/final_sft"),
        1e-4,
    );
    println!("final weights: worst abs diff {worst_weight:e}");
}
