//! bf16 mixed precision on the CPU (burn's Flex backend computes bf16)
//! against the fp32 TRL 1.16 run of the fixture:
//! - every DPO micro-batch of `expected/dpo_batches_model_b.jsonl` with
//!   policy and reference loaded in bf16;
//! - `align dpo recipe_dpo.yaml --set bf16=true` (the recipe path): the
//!   16 logged steps and the final eval line of `expected/dpo_train_log.jsonl`,
//!   the final weights, and a bf16 `model.safetensors` + `config.json`;
//! - the optimizer's fp32 master weights and moments next to bf16 parameters.
//!
//! The tolerance. bf16 keeps 8 significant bits: one rounding errs by up to
//! 2⁻⁹ ≈ 2e-3 relative, and a value carries the roundings of the weights it
//! was made from and of every bf16 activation on its way (embedding, q/k/v,
//! scores, MLP, residual sums: a few dozen per token here). The fp32 parts
//! (norms, softmax, log-softmax, sums, loss, optimizer) add none. So a
//! quantity is held to 3e-2 relative (about 16 bf16 roundings that do not
//! cancel), with an absolute floor for values near zero set by the
//! largest term they are differences of: rewards and margins are
//! `beta × (policy − reference)` log-prob sums (|sum| ≈ 150, beta 0.05), so
//! 2e-2 absolute; the loss, a function of those margins, 2e-2 absolute too;
//! the mean logits (≈ 1e-2, means of 768 logits of ≈ 0.5) 5e-3 absolute.
//! The fp32 runs of these tests match TRL to 1e-5 (`dpo_parity`): all of
//! the difference here is bf16's. The measured worst values are printed.

mod common;

use std::path::Path;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::log::History;
use align::model::gemma::Gemma;
use align::model::hf::{load_gemma, named_tensors, read_safetensors};
use align::recipe::StageKind;
use align::train::accounting::StepRules;
use align::train::adamw::AdamWConfig;
use align::train::dpo::{DpoLossKind, DpoLossSpec, DpoLossState};
use align::train::objective::Objective;
use align::train::preference::{DpoObjective, PreferenceBatch, Reference};
use align::train::run::run_recipe;
use align::train::schedule::{Schedule, ScheduleKind};
use align::train::stage::RunOptions;
use align::train::trainer::{LoopSettings, Trainer};
use burn::module::AutodiffModule;
use burn::tensor::DType;
use common::{fixture, padded_batch, read_jsonl, side_sequence};
use serde_json::Value;

const BETA: f64 = 0.05;
/// Relative tolerance of a bf16 value against fp32 (see the module docs).
const REL: f64 = 3e-2;

/// The absolute floor of `key` (see the module docs).
fn abs_floor(key: &str) -> f64 {
    if key.starts_with("logits/") {
        5e-3
    } else {
        2e-2
    }
}

fn close(key: &str, got: f64, want: f64) -> bool {
    (got - want).abs() <= abs_floor(key).max(REL * want.abs())
}

fn kept_rows() -> Vec<Value> {
    read_jsonl(&fixture("tiny-gemma/expected/tokenized.jsonl"))
        .into_iter()
        .filter(|row| !row["dropped"].as_bool().unwrap_or(false))
        .collect()
}

fn preference_batch(rows: &[Value]) -> PreferenceBatch {
    let sequences: Vec<(Vec<i64>, Vec<bool>)> = ["chosen", "rejected"]
        .iter()
        .flat_map(|side| rows.iter().map(move |row| side_sequence(row, side)))
        .collect();
    PreferenceBatch {
        pairs: rows.len(),
        sequences: padded_batch(&sequences),
        reference_logps: None,
    }
}

fn bf16_objective() -> DpoObjective<CpuTrain> {
    let device = cpu_device();
    let reference = load_gemma::<Cpu>(&fixture("tiny-gemma/model"), DType::BF16, &device).unwrap();
    DpoObjective {
        spec: DpoLossSpec::new(vec![DpoLossKind::Sigmoid], None, BETA, 0.0).unwrap(),
        reference: Reference::Model(Box::new(reference)),
        state: DpoLossState::default(),
        device,
    }
}

#[test]
fn bf16_micro_batches_match_the_fp32_trl_values_within_bf16_tolerance() {
    let expected = read_jsonl(&fixture("tiny-gemma/expected/dpo_batches_model_b.jsonl"));
    let mut objective = bf16_objective();
    let policy =
        load_gemma::<Cpu>(&fixture("tiny-gemma/model_b"), DType::BF16, &cpu_device()).unwrap();
    assert_eq!(policy.dtype(), DType::BF16);
    let mut worst: Vec<(String, f64, f64)> = Vec::new();
    for (rows, want) in kept_rows().chunks(2).zip(&expected) {
        let (loss, metrics) = objective.eval_loss(&policy, &preference_batch(rows));
        let mut check = |key: &str, got: f64| {
            let w = want[key].as_f64().unwrap();
            assert!(
                got.is_finite() && close(key, got, w),
                "batch {}: {key} {got} vs {w}",
                want["batch_index"]
            );
            let (abs, rel) = ((got - w).abs(), (got - w).abs() / w.abs().max(1e-12));
            match worst.iter_mut().find(|(k, ..)| k == key) {
                Some(entry) => {
                    entry.1 = entry.1.max(abs);
                    entry.2 = entry.2.max(rel);
                }
                None => worst.push((key.to_string(), abs, rel)),
            }
        };
        check("loss", loss);
        for key in [
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
            "logits/chosen",
            "logits/rejected",
            "entropy",
        ] {
            check(key, metrics[key]);
        }
    }
    assert_eq!(expected.len(), 16);
    for (key, abs, rel) in worst {
        println!("{key}: worst abs {abs:.3e}, worst rel {rel:.3e}");
    }
}

#[test]
fn align_dpo_in_bf16_follows_the_fp32_trl_run() {
    let out = tempfile::tempdir().unwrap();
    let set = vec![
        format!("output_dir={}", out.path().display()),
        "bf16=true".to_string(),
    ];
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
    let got = read_jsonl(&out.path().join("metrics.jsonl"));
    let want = read_jsonl(&fixture("tiny-gemma/expected/dpo_train_log.jsonl"));
    let (mut worst_rel, mut worst_at) = (0.0f64, String::new());
    let (mut worst_used, mut worst_used_at) = (0.0f64, String::new());
    for w in want.iter().filter(|w| w.get("train_loss").is_none()) {
        let is_eval = w.get("eval_loss").is_some();
        let g = got
            .iter()
            .find(|g| g.get("step") == w.get("step") && g.get("eval_loss").is_some() == is_eval)
            .unwrap_or_else(|| panic!("no logged line like {w}"));
        for (key, value) in w.as_object().unwrap() {
            let (Some(b), false) = (value.as_f64(), skipped(key)) else {
                continue;
            };
            let a = g[key].as_f64().unwrap_or_else(|| panic!("{key} missing"));
            assert!(close(key, a, b), "step {}: {key} {a} vs {b}", w["step"]);
            let used = (a - b).abs() / abs_floor(key).max(REL * b.abs());
            if used > worst_used {
                (worst_used, worst_used_at) = (used, format!("{key} at step {}", w["step"]));
            }
            let rel = (a - b).abs() / b.abs();
            if b.abs() > 0.1 && rel > worst_rel {
                (worst_rel, worst_at) = (rel, format!("{key} at step {}", w["step"]));
            }
        }
    }
    println!("worst relative error (values above 0.1): {worst_rel:.3e} ({worst_at})");
    println!("largest share of the tolerance used: {worst_used:.2} ({worst_used_at})");

    // Saved as transformers saves a bf16 model.
    let (_, tensors) = read_safetensors(&out.path().join("model.safetensors")).unwrap();
    assert!(tensors.values().all(|t| t.dtype == DType::BF16));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    let worst = worst_weight_diff(out.path(), &fixture("tiny-gemma/expected/final_policy"));
    println!("final weights: worst abs diff {worst:.3e}");
    // Weights of |w| ≲ 0.5 (init std 0.15), lr 1e-3 × 16 steps: a bf16 ulp
    // at 0.5 is 2e-3 and the rounding of the final value alone errs by 1e-3.
    assert!(worst < 1e-2, "{worst}");
}

/// `epoch`, `step`, `learning_rate`, `num_tokens` are counts and schedules
/// (exact in any precision, checked by `stage_parity`); `rewards/accuracies`
/// and `mean_token_accuracy` are ratios of small counts that one flipped
/// comparison changes by 0.25 or more.
fn skipped(key: &str) -> bool {
    matches!(
        key,
        "epoch" | "step" | "rewards/accuracies" | "eval_rewards/accuracies"
    ) || key.ends_with("mean_token_accuracy")
}

fn worst_weight_diff(dir: &Path, expected: &Path) -> f32 {
    let device = cpu_device();
    let got = load_gemma::<Cpu>(dir, DType::F32, &device).unwrap();
    let want = load_gemma::<Cpu>(expected, DType::F32, &device).unwrap();
    let mut worst = 0.0f32;
    for ((_, a), (_, b)) in named_tensors(&got).iter().zip(named_tensors(&want).iter()) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs());
        worst = worst.max(diff.fold(0.0, f32::max));
    }
    worst
}

#[test]
fn master_weights_and_moments_are_fp32_while_parameters_are_bf16() {
    let rows = kept_rows();
    let batch = preference_batch(&rows[..2]);
    let settings = LoopSettings {
        total_steps: 1,
        accumulation: 1,
        schedule: Schedule {
            kind: ScheduleKind::Constant,
            peak_lr: 1e-3,
            warmup_steps: 0,
            total_steps: 1,
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
    let mut objective = bf16_objective();
    let mut history = History::default();
    let policy =
        load_gemma::<CpuTrain>(&fixture("tiny-gemma/model"), DType::BF16, &cpu_device()).unwrap();
    let mut trainer = Trainer::new(settings, &mut objective, &mut history);
    let one = vec![batch];
    let epochs = |_: usize| one.clone();
    let (model, _) = trainer.fit(policy, &epochs, &[]).unwrap();
    let model: Gemma<Cpu> = model.valid();
    let parameters = named_tensors(&model);
    assert!(parameters.iter().all(|(_, t)| t.dtype == DType::BF16));
    let optimizer = &trainer.optimizer;
    // Every parameter has a master and moments (the tied LM head is one).
    assert_eq!(optimizer.masters.len(), parameters.len());
    assert_eq!(optimizer.moments.len(), parameters.len());
    for master in optimizer.masters.values() {
        assert_eq!(master.dtype(), DType::F32);
    }
    for moments in optimizer.moments.values() {
        assert_eq!(moments.exp_avg.dtype(), DType::F32);
        assert_eq!(moments.exp_avg_sq.dtype(), DType::F32);
    }
}
