//! The fused kernels against the composed burn ops they replace (the path
//! every other backend takes): same values and same gradients on the CPU
//! autodiff backend, and the inner backend's forward bit for bit the
//! autodiff one's (policy and reference must agree exactly).

use burn::tensor::{Bool, Tensor, TensorData};

use super::*;

/// Deterministic values in about [-2, 2] with no pattern a bug could hide in.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0) - 2.0)
        .collect()
}

fn leaf<const D: usize>(shape: [usize; D], seed: usize) -> Tensor<CpuTrain, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), &Default::default()).require_grad()
}

/// Asserts `got` within `tolerance` (relative, floored at 1) of `want`.
fn assert_close(got: Vec<f32>, want: Vec<f32>, tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * w.abs().max(1.0),
            "{what}[{i}]: fused {g} vs composed {w}"
        );
    }
}

fn floats<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 tensor")
}

/// Runs `op` and `reference` on fresh copies of the same leaves, weights
/// each output element differently, and compares outputs and the leaves'
/// gradients.
fn check<const D: usize, const N: usize>(
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

fn causal_blocked<B: burn::tensor::backend::Backend>(shape: [usize; 4]) -> Tensor<B, 4, Bool> {
    let [batch, heads, queries, keys] = shape;
    // Causal, plus row 1 of batch 0 fully blocked (a padded query).
    let blocked: Vec<bool> = (0..batch * heads * queries * keys)
        .map(|i| {
            let (q, k, b) = ((i / keys) % queries, i % keys, i / (heads * queries * keys));
            k > q || (b == 0 && q == 1)
        })
        .collect();
    Tensor::from_data(TensorData::new(blocked, shape), &Default::default())
}

#[test]
fn attention_probs_match_the_composed_softmax() {
    let shape = [2, 3, 5, 5];
    let scale = 0.125;
    check(
        [shape],
        |x| attention_probs(x[0].clone(), causal_blocked(shape), scale),
        |x| {
            ops::softmax(
                (x[0].clone() * scale).mask_fill(causal_blocked(shape), f32::MIN),
                3,
            )
        },
        1e-6,
    );
}

#[test]
fn gelu_tanh_gated_matches_the_composed_gelu() {
    check(
        [[4, 33], [4, 33]],
        |x| gelu_tanh_gated(x[0].clone(), x[1].clone()),
        |x| ops::gelu_tanh(x[0].clone()) * x[1].clone(),
        1e-5,
    );
}

#[test]
fn rms_norm_matches_the_composed_norm() {
    let weight = || leaf::<1>([24], 7);
    // The weight's gradient is checked through a second, 1-D comparison below.
    check(
        [[3, 5, 24]],
        |x| rms_norm(x[0].clone(), weight(), 1e-6),
        |x| ops::rms_norm(x[0].clone(), weight(), 1e-6),
        1e-5,
    );
    check(
        [[24]],
        |w| {
            rms_norm(leaf::<2>([10, 24], 3), w[0].clone(), 1e-6)
                .sum_dim(0)
                .squeeze_dim(0)
        },
        |w| {
            ops::rms_norm(leaf::<2>([10, 24], 3), w[0].clone(), 1e-6)
                .sum_dim(0)
                .squeeze_dim(0)
        },
        1e-5,
    );
}

#[test]
fn rope_matches_the_composed_rotation() {
    let shape = [2, 3, 2, 8];
    let table = |seed| {
        Tensor::<CpuTrain, 4>::from_data(
            TensorData::new(values(shape.iter().product(), seed), shape),
            &Default::default(),
        )
    };
    check(
        [shape],
        |x| rope(x[0].clone(), table(11), table(12)),
        |x| ops::rope(x[0].clone(), table(11), table(12)).swap_dims(1, 2),
        1e-6,
    );
}

#[test]
fn the_inner_backend_computes_the_same_bits() {
    let shape = [2, 3, 5, 5];
    let scores = leaf(shape, 1);
    let train = floats(attention_probs(scores.clone(), causal_blocked(shape), 0.5));
    let inner = floats(attention_probs(
        scores.inner(),
        causal_blocked::<Cpu>(shape),
        0.5,
    ));
    assert_eq!(train, inner);
    let (gate, up) = (leaf([4, 33], 2), leaf([4, 33], 3));
    let train = floats(gelu_tanh_gated(gate.clone(), up.clone()));
    let inner = floats(gelu_tanh_gated(gate.inner(), up.inner()));
    assert_eq!(train, inner);
}

#[test]
fn swap_middle_axes_matches_the_transposed_view() {
    check(
        [[2, 3, 4, 5]],
        |x| swap_middle_axes(x[0].clone()),
        |x| x[0].clone().swap_dims(1, 2),
        0.0,
    );
}

#[test]
fn batched_matmul_matches_burns_matmul() {
    check(
        [[2, 3, 4, 5], [2, 3, 6, 5]],
        |x| batched_matmul(x[0].clone(), x[1].clone(), Rhs::Transposed),
        |x| x[0].clone().matmul(x[1].clone().swap_dims(2, 3)),
        1e-5,
    );
    check(
        [[2, 3, 4, 5], [2, 3, 5, 6]],
        |x| batched_matmul(x[0].clone(), x[1].clone(), Rhs::AsStored),
        |x| x[0].clone().matmul(x[1].clone()),
        1e-5,
    );
}
