//! The fixture's DPO parity on CUDA (feature `cuda`; run by
//! `scripts/gpu-check.sh`, needs a GPU): every micro-batch and the 16-step
//! `align dpo` run against the fp32 TRL 1.16 values, in fp32 within
//! [`Tolerance::TF32`] (burn's autotune may pick TF32 tensor-core matmuls
//! for f32) and in bf16 within [`Tolerance::BF16`], as on the CPU
//! (`bf16_mixed.rs`). The worst errors are printed.
#![cfg(feature = "cuda")]

mod common;

use align::backend::{Cuda, CudaTrain};
use burn::tensor::DType;
use common::fixture;
use common::fixture_dpo::{Tolerance, check_dpo_run, check_micro_batches, worst_weight_diff};

fn device() -> burn::tensor::Device<Cuda> {
    Default::default()
}

#[test]
fn cuda_fp32_micro_batches_match_trl() {
    check_micro_batches::<CudaTrain>(DType::F32, &device(), Tolerance::TF32)
        .print("cuda fp32 micro-batches");
}

#[test]
fn cuda_bf16_micro_batches_match_trl_within_bf16_tolerance() {
    check_micro_batches::<CudaTrain>(DType::BF16, &device(), Tolerance::BF16)
        .print("cuda bf16 micro-batches");
}

fn run(sets: &[&str], tolerance: Tolerance, label: &str, weights_tolerance: f32) {
    let out = tempfile::tempdir().unwrap();
    let (worst, used) = check_dpo_run::<CudaTrain>(sets, out.path(), &device(), tolerance);
    worst.print(label);
    println!("{label}: largest share of the tolerance used: {used:.2}");
    let expected = fixture("tiny-gemma/expected/final_policy");
    let weights = worst_weight_diff::<Cuda>(out.path(), &expected, &device());
    println!("{label}: final weights: worst abs diff {weights:.3e}");
    assert!(weights < weights_tolerance, "{weights}");
}

#[test]
fn cuda_fp32_dpo_run_matches_trl() {
    // fp32 weights move by lr 1e-3 per step: TF32 products err by ~5e-4
    // relative in the gradients, so a quarter of the bf16 bound.
    run(&[], Tolerance::TF32, "cuda fp32 run", 2.5e-3);
}

#[test]
fn cuda_bf16_dpo_run_follows_trl_within_bf16_tolerance() {
    run(&["bf16=true"], Tolerance::BF16, "cuda bf16 run", 1e-2);
}
