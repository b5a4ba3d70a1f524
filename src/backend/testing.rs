//! For the tests of each fused op against its composed math (the path
//! every other backend takes): deterministic inputs, and the comparison of
//! two ops' outputs and gradients on the CPU autodiff backend.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::backend::CpuTrain;

/// Deterministic values in about [-2, 2] with no pattern a bug could hide in.
pub fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0) - 2.0)
        .collect()
}

/// A tracked tensor of `shape` filled with `values(_, seed)`.
pub fn leaf<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<CpuTrain, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), &Default::default()).require_grad()
}

/// Asserts `got` within `tolerance` (relative, floored at 1) of `want`.
pub fn assert_close(got: Vec<f32>, want: Vec<f32>, tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * w.abs().max(1.0),
            "{what}[{i}]: fused {g} vs composed {w}"
        );
    }
}

pub fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 tensor")
}

/// Runs `op` and `reference` on fresh copies of the same leaves, weights
/// each output element differently, and compares outputs and the leaves'
/// gradients.
pub fn check<const D: usize, const N: usize>(
    shapes: [[usize; D]; N],
    fused: impl Fn(&[Tensor<CpuTrain, D>]) -> Tensor<CpuTrain, D>,
    composed: impl Fn(&[Tensor<CpuTrain, D>]) -> Tensor<CpuTrain, D>,
    tolerance: f32,
) {
    let run = |op: &dyn Fn(&[Tensor<CpuTrain, D>]) -> Tensor<CpuTrain, D>| {
        let leaves: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| leaf(*s, i))
            .collect();
        let out = op(&leaves);
        let weights = Tensor::<CpuTrain, D>::from_data(
            TensorData::new(values(out.shape().num_elements(), 99), out.dims()),
            &Default::default(),
        );
        let grads = (out.clone() * weights).sum().backward();
        let leaf_grads: Vec<Vec<f32>> = leaves
            .iter()
            .map(|l| floats(l.grad(&grads).expect("every leaf gets a gradient")))
            .collect();
        (floats(out), leaf_grads)
    };
    let (fused_out, fused_grads) = run(&fused);
    let (composed_out, composed_grads) = run(&composed);
    assert_close(fused_out, composed_out, tolerance, "output");
    for (i, (f, c)) in fused_grads.into_iter().zip(composed_grads).enumerate() {
        assert_close(f, c, tolerance, &format!("gradient of input {i}"));
    }
}
