//! The checks the GPU bundle runs (`scripts/gpu-bundle/run.sh`): a kernel
//! on the device, then the fixture's DPO parity, every micro-batch and the
//! 16-step `align dpo` run, against the fp32 TRL 1.16 values: in fp32
//! within [`Tolerance::TF32`] (burn's autotune may pick TF32 tensor-core
//! matmuls for f32 on CUDA) and in bf16 within [`Tolerance::BF16`], as on
//! the CPU (`bf16_mixed.rs`). The worst errors are printed.
//!
//! They are ignored by a plain `cargo test` (the CPU tests cover the same
//! ground); the bundle runs them with `--include-ignored` on the backend
//! `ALIGN_GPU_PARITY_BACKEND` names: `cuda` (the default when built with
//! `--features cuda`) or `cpu` (its `--cpu-smoke`). Fixtures are read from
//! `ALIGN_TEST_FIXTURES` when set (see `common::fixture`).

mod common;

use align::backend::CpuTrain;
#[cfg(feature = "cuda")]
use align::backend::CudaTrain;
use align::train::TrainBackend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use common::fixture;
use common::fixture_dpo::{Tolerance, check_dpo_run, check_micro_batches, worst_weight_diff};

/// Runs `$check::<TrainBackend>(&device)` on the backend the bundle asked for.
macro_rules! on_chosen_backend {
    ($check:ident) => {
        match std::env::var("ALIGN_GPU_PARITY_BACKEND").as_deref() {
            Ok("cpu") => $check::<CpuTrain>(&Default::default()),
            #[cfg(feature = "cuda")]
            Ok("cuda") | Err(_) => $check::<CudaTrain>(&Default::default()),
            other => panic!(
                "ALIGN_GPU_PARITY_BACKEND={other:?}: expected `cpu`{}",
                if cfg!(feature = "cuda") {
                    " or `cuda`"
                } else {
                    " (built without `--features cuda`)"
                }
            ),
        }
    };
}

/// A 64x48 by 48x40 product on the device against the same product in f64
/// on the host: proves the driver, NVRTC and a kernel launch work before
/// anything larger runs. Each element may err by one TF32 rounding of each
/// input (2^-11 relative) over the sum of |a||b|.
fn matmul_matches_the_host<A: AutodiffBackend>(device: &A::Device) {
    let (m, k, n) = (64, 48, 40);
    let value = |i: usize, salt: usize| ((i * 37 + salt) % 101) as f32 / 50.0 - 1.0;
    let a: Vec<f32> = (0..m * k).map(|i| value(i, 0)).collect();
    let b: Vec<f32> = (0..k * n).map(|i| value(i, 13)).collect();
    let lhs = Tensor::<A::InnerBackend, 2>::from_data(TensorData::new(a.clone(), [m, k]), device);
    let rhs = Tensor::<A::InnerBackend, 2>::from_data(TensorData::new(b.clone(), [k, n]), device);
    let got = lhs.matmul(rhs).into_data().to_vec::<f32>().unwrap();
    let mut worst = 0.0f64;
    for row in 0..m {
        for col in 0..n {
            let terms = (0..k).map(|i| (a[row * k + i] as f64, b[i * n + col] as f64));
            let (exact, magnitude) =
                terms.fold((0.0, 0.0), |(s, m), (x, y)| (s + x * y, m + (x * y).abs()));
            let error = (got[row * n + col] as f64 - exact).abs();
            assert!(
                error <= magnitude * 2f64.powi(-10),
                "[{row}, {col}]: {} vs {exact}",
                got[row * n + col]
            );
            worst = worst.max(error / magnitude);
        }
    }
    println!("device {device:?}: matmul worst error {worst:.3e} of sum |a||b|");
}

#[test]
#[ignore = "run by the GPU bundle (scripts/gpu-bundle/run.sh)"]
fn device_runs_a_kernel() {
    on_chosen_backend!(matmul_matches_the_host)
}

fn fp32_micro_batches<A: TrainBackend>(device: &A::Device) {
    check_micro_batches::<A>(DType::F32, device, Tolerance::TF32).print("fp32 micro-batches");
}

fn bf16_micro_batches<A: TrainBackend>(device: &A::Device) {
    check_micro_batches::<A>(DType::BF16, device, Tolerance::BF16).print("bf16 micro-batches");
}

#[test]
#[ignore = "run by the GPU bundle (scripts/gpu-bundle/run.sh)"]
fn fp32_micro_batches_match_trl() {
    on_chosen_backend!(fp32_micro_batches)
}

#[test]
#[ignore = "run by the GPU bundle (scripts/gpu-bundle/run.sh)"]
fn bf16_micro_batches_match_trl_within_bf16_tolerance() {
    on_chosen_backend!(bf16_micro_batches)
}

/// The 16-step run in `sets`' precision; the final weights against TRL's.
fn dpo_run<A: TrainBackend>(
    device: &A::Device,
    sets: &[&str],
    tolerance: Tolerance,
    label: &str,
    weights_tolerance: f32,
) {
    let out = tempfile::tempdir().unwrap();
    let (worst, used) = check_dpo_run::<A>(sets, out.path(), device, tolerance);
    worst.print(label);
    println!("{label}: largest share of the tolerance used: {used:.2}");
    let expected = fixture("tiny-gemma/expected/final_policy");
    let weights = worst_weight_diff::<A::InnerBackend>(out.path(), &expected, device);
    println!("{label}: final weights: worst abs diff {weights:.3e}");
    assert!(weights < weights_tolerance, "{weights}");
}

/// fp32 weights move by lr 1e-3 per step: TF32 products err by ~5e-4
/// relative in the gradients, so a quarter of the bf16 bound.
fn fp32_dpo_run<A: TrainBackend>(device: &A::Device) {
    dpo_run::<A>(device, &[], Tolerance::TF32, "fp32 run", 2.5e-3);
}

fn bf16_dpo_run<A: TrainBackend>(device: &A::Device) {
    dpo_run::<A>(device, &["bf16=true"], Tolerance::BF16, "bf16 run", 1e-2);
}

#[test]
#[ignore = "run by the GPU bundle (scripts/gpu-bundle/run.sh)"]
fn fp32_dpo_run_matches_trl() {
    on_chosen_backend!(fp32_dpo_run)
}

#[test]
#[ignore = "run by the GPU bundle (scripts/gpu-bundle/run.sh)"]
fn bf16_dpo_run_follows_trl_within_bf16_tolerance() {
    on_chosen_backend!(bf16_dpo_run)
}
