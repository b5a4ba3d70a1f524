//! The fixture's DPO comparisons against the fp32 TRL 1.16 run, generic
//! over the backend and held to a stated [`Tolerance`]: each micro-batch's
//! loss and metrics (policy `model_b`, reference `model`), and the 16-step
//! `align dpo recipe_dpo.yaml` run. Used on the CPU in bf16
//! (`bf16_mixed.rs`) and on CUDA in fp32 and bf16 (`gpu_parity.rs`).

use std::path::Path;

use align::model::gemma::Gemma;
use align::model::hf::{load_gemma, named_tensors};
use align::recipe::StageKind;
use align::train::TrainBackend;
use align::train::dpo::{DpoLossKind, DpoLossSpec};
use align::train::objective::Objective;
use align::train::preference::{DpoObjective, PreferenceBatch, Reference};
use align::train::run::run_recipe;
use align::train::stage::RunOptions;
use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::Value;

use super::{fixture, padded_batch, read_jsonl, side_sequence};

pub const BETA: f64 = 0.05;

/// `|got − want| ≤ max(abs, rel·|want|)`, with `logits_abs` as the floor of
/// the `logits/*` means (≈ 1e-2, means of 768 logits of ≈ 0.5).
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
    pub logits_abs: f64,
}

impl Tolerance {
    /// bf16 against fp32. bf16 keeps 8 significant bits: one rounding errs
    /// by up to 2⁻⁹ ≈ 2e-3 relative, and a value carries the roundings of
    /// the weights it was made from and of every bf16 activation on its way
    /// (embedding, q/k/v, scores, MLP, residual sums: a few dozen per
    /// token here); the fp32 parts (norms, softmax, log-softmax, sums,
    /// loss, optimizer) add none. So 3e-2 relative (about 16 roundings that
    /// do not cancel), and near zero an absolute floor set by the largest
    /// term a value is a difference of: rewards and margins are `beta ×
    /// (policy − reference)` log-prob sums (|sum| ≈ 150, beta 0.05), so
    /// 2e-2 absolute, and the loss, a function of the margins, the same.
    pub const BF16: Tolerance = Tolerance {
        rel: 3e-2,
        abs: 2e-2,
        logits_abs: 5e-3,
    };

    /// fp32 on CUDA against fp32 on the CPU's TRL. burn's autotune may run
    /// f32 matmuls on tensor cores, which cubek-matmul stages as TF32 (10
    /// mantissa bits: 2⁻¹¹ ≈ 5e-4 per rounding, a quarter of bf16's), so
    /// a quarter of [`Tolerance::BF16`]. Without TF32 the errors are the
    /// CPU's (1e-5, `dpo_parity.rs`): the printed worst values tell which.
    pub const TF32: Tolerance = Tolerance {
        rel: 7.5e-3,
        abs: 5e-3,
        logits_abs: 1.25e-3,
    };

    pub fn allowed(&self, key: &str, want: f64) -> f64 {
        let floor = match key.contains("logits/") {
            true => self.logits_abs,
            false => self.abs,
        };
        floor.max(self.rel * want.abs())
    }
}

/// The worst absolute and relative error of each compared key.
#[derive(Default, Debug)]
pub struct Worst(pub Vec<(String, f64, f64)>);

impl Worst {
    fn record(&mut self, key: &str, got: f64, want: f64) {
        let (abs, rel) = (
            (got - want).abs(),
            (got - want).abs() / want.abs().max(1e-12),
        );
        match self.0.iter_mut().find(|(k, ..)| k == key) {
            Some(entry) => {
                entry.1 = entry.1.max(abs);
                entry.2 = entry.2.max(rel);
            }
            None => self.0.push((key.to_string(), abs, rel)),
        }
    }

    pub fn print(&self, label: &str) {
        for (key, abs, rel) in &self.0 {
            println!("{label}: {key}: worst abs {abs:.3e}, worst rel {rel:.3e}");
        }
    }
}

/// The train rows TRL kept, as it tokenized them.
pub fn kept_rows() -> Vec<Value> {
    read_jsonl(&fixture("tiny-gemma/expected/tokenized.jsonl"))
        .into_iter()
        .filter(|row| !row["dropped"].as_bool().unwrap_or(false))
        .collect()
}

/// Chosen rows then rejected rows, as TRL concatenates them.
pub fn preference_batch(rows: &[Value]) -> PreferenceBatch {
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

/// The sigmoid DPO objective over the fixture's `model`, loaded in `dtype`.
pub fn objective<A: AutodiffBackend>(dtype: DType, device: &A::Device) -> DpoObjective<A> {
    let reference =
        load_gemma::<A::InnerBackend>(&fixture("tiny-gemma/model"), dtype, device).unwrap();
    DpoObjective {
        spec: DpoLossSpec::new(vec![DpoLossKind::Sigmoid], None, BETA, 0.0).unwrap(),
        reference: Reference::Model(Box::new(reference)),
        device: device.clone(),
    }
}

/// Every micro-batch of `expected/dpo_batches_model_b.jsonl` in `dtype` on
/// `A`, within `tolerance`; returns the worst errors.
pub fn check_micro_batches<A: TrainBackend>(
    dtype: DType,
    device: &A::Device,
    tolerance: Tolerance,
) -> Worst {
    let expected = read_jsonl(&fixture("tiny-gemma/expected/dpo_batches_model_b.jsonl"));
    let mut objective = objective::<A>(dtype, device);
    let policy: Gemma<A::InnerBackend> =
        load_gemma(&fixture("tiny-gemma/model_b"), dtype, device).unwrap();
    assert_eq!(policy.dtype(), dtype);
    let mut worst = Worst::default();
    for (rows, want) in kept_rows().chunks(2).zip(&expected) {
        let (loss, metrics) = objective.eval_loss(&policy, &preference_batch(rows));
        let mut check = |key: &str, got: f64| {
            let w = want[key].as_f64().unwrap();
            assert!(
                got.is_finite() && (got - w).abs() <= tolerance.allowed(key, w),
                "batch {}: {key} {got} vs {w}",
                want["batch_index"]
            );
            worst.record(key, got, w);
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
    worst
}

/// `align dpo recipe_dpo.yaml --set KEY=VALUE...` on `A` into `out`: every
/// logged step and the final eval line of `expected/dpo_train_log.jsonl`
/// within `tolerance`; returns the worst errors and the largest share of
/// the tolerance used.
pub fn check_dpo_run<A: TrainBackend>(
    sets: &[&str],
    out: &Path,
    device: &A::Device,
    tolerance: Tolerance,
) -> (Worst, f64) {
    let mut set = vec![format!("output_dir={}", out.display())];
    set.extend(sets.iter().map(|s| s.to_string()));
    let options = RunOptions {
        quiet: true,
        ..Default::default()
    };
    let config = fixture("tiny-gemma/recipe_dpo.yaml");
    run_recipe::<A>(&config, &set, Some(StageKind::Dpo), &options, true, device).unwrap();
    let got = read_jsonl(&out.join("metrics.jsonl"));
    let want = read_jsonl(&fixture("tiny-gemma/expected/dpo_train_log.jsonl"));
    let (mut worst, mut used) = (Worst::default(), 0.0f64);
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
            let allowed = tolerance.allowed(key, b);
            assert!(
                (a - b).abs() <= allowed,
                "step {}: {key} {a} vs {b}",
                w["step"]
            );
            used = used.max((a - b).abs() / allowed);
            worst.record(key, a, b);
        }
    }
    (worst, used)
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

/// The largest absolute difference between the weights saved in `dir` and
/// those of the HF folder `expected`.
pub fn worst_weight_diff<B: Backend>(dir: &Path, expected: &Path, device: &B::Device) -> f32 {
    let got = load_gemma::<B>(dir, DType::F32, device).unwrap();
    let want = load_gemma::<B>(expected, DType::F32, device).unwrap();
    let mut worst = 0.0f32;
    for ((_, a), (_, b)) in named_tensors(&got).iter().zip(named_tensors(&want).iter()) {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs());
        worst = worst.max(diff.fold(0.0, f32::max));
    }
    worst
}
