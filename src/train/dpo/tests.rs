//! The losses against TRL 1.16's own `DPOTrainer._compute_loss`, run on
//! fixed inputs by `scripts/trl_loss_values.py`: loss, rewards and the
//! gradient with respect to the policy log-probs, for every loss type.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::*;
use crate::backend::{Cpu, CpuTrain, cpu_device};

/// What the script wrote: the inputs and TRL's numbers on them.
#[derive(Deserialize)]
struct TrlCases {
    inputs: Vec<Inputs>,
    cases: Vec<Case>,
}

/// Summed log-probs and token counts per pair.
#[derive(Deserialize)]
struct Inputs {
    policy_chosen: Vec<f64>,
    policy_rejected: Vec<f64>,
    ref_chosen: Vec<f64>,
    ref_rejected: Vec<f64>,
    chosen_tokens: Vec<f64>,
    rejected_tokens: Vec<f64>,
}

/// Settings, and what TRL computed for them on `inputs[inputs]`.
#[derive(Deserialize)]
struct Case {
    kinds: Vec<String>,
    weights: Option<Vec<f64>>,
    beta: f64,
    label_smoothing: f64,
    discopop_tau: f64,
    inputs: usize,
    loss: f64,
    chosen_rewards: Vec<f64>,
    rejected_rewards: Vec<f64>,
    /// d loss / d policy_chosen.
    grad_chosen: Vec<f64>,
    /// d loss / d policy_rejected.
    grad_rejected: Vec<f64>,
}

fn trl_cases() -> TrlCases {
    let text = include_str!("../../../tests/fixtures/trl-dpo-losses/cases.json");
    serde_json::from_str(text).expect("tests/fixtures/trl-dpo-losses/cases.json")
}

fn tensor<B: Backend>(values: &[f64], device: &B::Device) -> Tensor<B, 1> {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
    t.into_data()
        .to_vec::<f32>()
        .expect("fp32 tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// fp32 agreement: 1e-6, relative above magnitude 1 (losses like
/// `sppo_hard` are tens, where one fp32 ulp is already ~2e-6).
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, TRL {w} (tol {tol})"
        );
    }
}

fn spec_of(case: &Case) -> DpoLossSpec {
    let kinds = case
        .kinds
        .iter()
        .map(|name| name.parse().expect("TRL loss name"))
        .collect();
    DpoLossSpec::new(kinds, case.weights.clone(), case.beta, case.label_smoothing)
        .and_then(|spec| spec.with_discopop_tau(case.discopop_tau))
        .expect("valid case")
}

fn logps_of<B: Backend>(
    inputs: &Inputs,
    device: &B::Device,
    policy: impl Fn(Tensor<B, 1>) -> Tensor<B, 1>,
) -> PairLogps<B> {
    PairLogps {
        policy_chosen: policy(tensor(&inputs.policy_chosen, device)),
        policy_rejected: policy(tensor(&inputs.policy_rejected, device)),
        ref_chosen: tensor(&inputs.ref_chosen, device),
        ref_rejected: tensor(&inputs.ref_rejected, device),
        chosen_tokens: tensor(&inputs.chosen_tokens, device),
        rejected_tokens: tensor(&inputs.rejected_tokens, device),
    }
}

/// Loss, rewards and the gradient with respect to the policy log-probs
/// match TRL 1.16 for every case, on the autodiff backend.
#[test]
fn matches_trl_losses_rewards_and_gradients() {
    let device = cpu_device();
    let trl = trl_cases();
    for case in &trl.cases {
        let name = format!(
            "{:?} beta={} ls={}",
            case.kinds, case.beta, case.label_smoothing
        );
        let spec = spec_of(case);
        let logps = logps_of::<CpuTrain>(&trl.inputs[case.inputs], &device, Tensor::require_grad);
        let out = dpo_loss(&spec, &logps);
        assert_eq!(out.loss.dims(), [1], "{name}: loss shape");
        assert!(
            !out.chosen_rewards.is_require_grad(),
            "{name}: rewards detached"
        );
        assert!(
            !out.rejected_rewards.is_require_grad(),
            "{name}: rewards detached"
        );
        assert_close(
            &format!("{name} loss"),
            &host(out.loss.clone()),
            &[case.loss],
        );
        assert_close(
            &format!("{name} chosen rewards"),
            &host(out.chosen_rewards),
            &case.chosen_rewards,
        );
        assert_close(
            &format!("{name} rejected rewards"),
            &host(out.rejected_rewards),
            &case.rejected_rewards,
        );
        let grads = out.loss.backward();
        // A log-prob no term reads (the rejected ones under `sft`) has no
        // gradient in burn; TRL's single leaf gets zeros there.
        let grad =
            |t: &Tensor<CpuTrain, 1>| t.grad(&grads).map_or_else(|| vec![0.0; t.dims()[0]], host);
        assert_close(
            &format!("{name} grad chosen"),
            &grad(&logps.policy_chosen),
            &case.grad_chosen,
        );
        assert_close(
            &format!("{name} grad rejected"),
            &grad(&logps.policy_rejected),
            &case.grad_rejected,
        );
    }
}

/// The same numbers on the plain backend (the evaluation path, no graph).
#[test]
fn matches_trl_without_autodiff() {
    let device = cpu_device();
    let trl = trl_cases();
    for case in &trl.cases {
        let logps = logps_of::<Cpu>(&trl.inputs[case.inputs], &device, |t| t);
        let out = dpo_loss(&spec_of(case), &logps);
        assert_close(
            &format!("{:?} loss", case.kinds),
            &host(out.loss),
            &[case.loss],
        );
    }
}

/// Every loss type is checked against TRL at least once.
#[test]
fn every_loss_type_has_trl_numbers() {
    let cases = trl_cases().cases;
    for kind in DpoLossKind::ALL {
        assert!(
            cases.iter().any(|c| c.kinds == [kind.name()]),
            "no single-term TRL case for {kind}"
        );
    }
}

#[test]
fn names_round_trip_and_unknown_names_list_the_valid_ones() {
    for kind in DpoLossKind::ALL {
        assert_eq!(kind.name().parse::<DpoLossKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    let err = "kto".parse::<DpoLossKind>().expect_err("not a DPO loss");
    let message = err.to_string();
    assert!(
        message.contains("`loss_type`") && message.contains("\"kto\""),
        "{message}"
    );
    for kind in DpoLossKind::ALL {
        assert!(message.contains(kind.name()), "{message} lacks {kind}");
    }
}

#[test]
fn config_errors_name_the_key() {
    let sigmoid = || vec![DpoLossKind::Sigmoid];
    let message = |r: Result<DpoLossSpec, DpoConfigError>| r.expect_err("invalid").to_string();
    for beta in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        assert!(message(DpoLossSpec::new(sigmoid(), None, beta, 0.0)).contains("`beta`"));
    }
    for ls in [-0.1, 0.5, 0.7, f64::NAN] {
        assert!(message(DpoLossSpec::new(sigmoid(), None, 0.1, ls)).contains("`label_smoothing`"));
    }
    let exo = DpoLossSpec::new(vec![DpoLossKind::ExoPair], None, 0.1, 0.0);
    assert_eq!(exo, Err(DpoConfigError::ExoPairNeedsSmoothing));
    assert!(message(exo).contains("`label_smoothing`"));
    let mismatch = DpoLossSpec::new(sigmoid(), Some(vec![0.5, 0.5]), 0.1, 0.0);
    assert_eq!(
        mismatch,
        Err(DpoConfigError::LossWeightsLength {
            weights: 2,
            types: 1
        })
    );
    assert!(message(mismatch).contains("`loss_weights`"));
    assert!(
        message(DpoLossSpec::new(sigmoid(), Some(vec![f64::NAN]), 0.1, 0.0))
            .contains("`loss_weights`")
    );
    assert!(message(DpoLossSpec::new(vec![], None, 0.1, 0.0)).contains("`loss_type`"));
    let tau = DpoLossSpec::new(sigmoid(), None, 0.1, 0.0).and_then(|s| s.with_discopop_tau(0.0));
    assert!(message(tau).contains("`discopop_tau`"));
}

#[test]
fn defaults_follow_trl() {
    let spec = DpoLossSpec::new(vec![DpoLossKind::Sigmoid, DpoLossKind::Sft], None, 0.1, 0.0)
        .expect("valid");
    assert_eq!(
        spec.terms,
        vec![(DpoLossKind::Sigmoid, 1.0), (DpoLossKind::Sft, 1.0)]
    );
    assert_eq!(spec.discopop_tau, 0.05);
}
