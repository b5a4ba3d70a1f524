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

/// `[batch, 1, seq, seq]`: causal, plus query 1 of batch row 0 blocked
/// from every key, and batch row 1 padded after three quarters of `seq`.
fn attention_mask<B: burn::tensor::backend::Backend>(
    batch: usize,
    seq: usize,
) -> Tensor<B, 4, Bool> {
    let blocked: Vec<bool> = (0..batch * seq * seq)
        .map(|i| {
            let (b, q, k) = (i / (seq * seq), i / seq % seq, i % seq);
            k > q || (b == 0 && q == 1) || (b == 1 && k >= seq * 3 / 4)
        })
        .collect();
    Tensor::from_data(
        TensorData::new(blocked, [batch, 1, seq, seq]),
        &Default::default(),
    )
}

#[test]
fn attention_matches_the_composed_attention() {
    // Two query heads per key/value head; 70 queries make two tiles.
    let (batch, heads, seq) = (2, 4, 70);
    let shapes = [
        [batch, heads, seq, 8],
        [batch, 2, seq, 8],
        [batch, 2, seq, 8],
    ];
    let scale = 0.35;
    for mask_heads in [1, heads] {
        let mask = || attention_mask(batch, seq).repeat_dim(1, mask_heads);
        check(
            shapes,
            |x| attention(x[0].clone(), x[1].clone(), x[2].clone(), mask(), scale),
            |x| ops::attention(x[0].clone(), x[1].clone(), x[2].clone(), mask(), scale),
            1e-5,
        );
    }
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
    let [q, k, v] = [[2, 2, 9, 4]; 3].map(|shape| leaf(shape, shape[2]));
    let (q, k, v) = (q * 1.5, k * 0.5, v);
    let train = floats(attention(
        q.clone(),
        k.clone(),
        v.clone(),
        attention_mask(2, 9),
        0.5,
    ));
    let inner = floats(attention(
        q.inner(),
        k.inner(),
        v.inner(),
        attention_mask::<Cpu>(2, 9),
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
fn token_logps_match_the_composed_log_softmax() {
    let (rows, vocab) = (5, 37);
    let targets: Vec<usize> = (0..rows).map(|r| r * 7 % vocab).collect();
    let ids: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let run = |fused: bool| {
        let logits = leaf([rows, vocab], 1);
        let picked = if fused {
            token_logps(&logits, &targets).expect("Flex fuses").0
        } else {
            let ids = Tensor::<CpuTrain, 2, burn::tensor::Int>::from_data(
                TensorData::new(ids.clone(), [rows, 1]),
                &Default::default(),
            );
            ops::log_softmax(logits.clone(), 1)
                .gather(1, ids)
                .reshape([rows])
        };
        let weights = Tensor::<CpuTrain, 1>::from_data(
            TensorData::new(values(rows, 9), [rows]),
            &Default::default(),
        );
        let grads = (picked.clone() * weights).sum().backward();
        (
            floats(picked),
            floats(logits.grad(&grads).expect("a gradient")),
        )
    };
    let ((fused, fused_grad), (composed, composed_grad)) = (run(true), run(false));
    assert_close(fused, composed, 1e-5, "log-probs");
    assert_close(fused_grad, composed_grad, 1e-5, "gradient of the logits");
    let logits = leaf([rows, vocab], 1);
    let train = floats(token_logps(&logits, &targets).expect("Flex fuses").0);
    let inner = floats(
        token_logps(&logits.inner(), &targets)
            .expect("Flex fuses")
            .0,
    );
    assert_eq!(train, inner, "policy and reference bits");
}
