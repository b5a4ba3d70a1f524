//! The fused kernels against the composed burn ops they replace (the path
//! every other backend takes): same values and same gradients on the CPU
//! autodiff backend, and the inner backend's forward bit for bit the
//! autodiff one's (policy and reference must agree exactly).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use super::*;
use crate::backend::testing::{check, floats, leaf, values};
use crate::backend::{Cpu, CpuTrain};

/// `[batch, 1, seq, seq]`: causal, plus query 1 of batch row 0 blocked
/// from every key, and batch row 1 padded after three quarters of `seq`.
fn attention_mask<B: Backend>(batch: usize, seq: usize) -> Tensor<B, 4, Bool> {
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
            |x| CpuTrain::masked_attention(x[0].clone(), x[1].clone(), x[2].clone(), mask(), scale),
            |x| attention::composed(x[0].clone(), x[1].clone(), x[2].clone(), mask(), scale),
            1e-5,
        );
    }
}

#[test]
fn gelu_tanh_gated_matches_the_composed_gelu() {
    check(
        [[4, 33], [4, 33]],
        |x| CpuTrain::gelu_tanh_gated(x[0].clone(), x[1].clone()),
        |x| gelu::composed(x[0].clone(), x[1].clone()),
        1e-5,
    );
}

#[test]
fn rms_norm_matches_the_composed_norm() {
    let weight = || leaf::<1>([24], 7);
    // The weight's gradient is checked through a second, 1-D comparison below.
    check(
        [[3, 5, 24]],
        |x| CpuTrain::rms_norm(x[0].clone(), weight(), 1e-6),
        |x| rms_norm::composed(x[0].clone(), weight(), 1e-6),
        1e-5,
    );
    check(
        [[24]],
        |w| {
            CpuTrain::rms_norm(leaf::<2>([10, 24], 3), w[0].clone(), 1e-6)
                .sum_dim(0)
                .squeeze_dim(0)
        },
        |w| {
            rms_norm::composed(leaf::<2>([10, 24], 3), w[0].clone(), 1e-6)
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
        |x| CpuTrain::rope(x[0].clone(), table(11), table(12)),
        |x| rope::composed(x[0].clone(), table(11), table(12)),
        1e-6,
    );
}

#[test]
fn the_inner_backend_computes_the_same_bits() {
    let [q, k, v] = [[2, 2, 9, 4]; 3].map(|shape| leaf(shape, shape[2]));
    let (q, k, v) = (q * 1.5, k * 0.5, v);
    let train = floats(CpuTrain::masked_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        attention_mask(2, 9),
        0.5,
    ));
    let inner = floats(Cpu::masked_attention(
        q.inner(),
        k.inner(),
        v.inner(),
        attention_mask::<Cpu>(2, 9),
        0.5,
    ));
    assert_eq!(train, inner);
    let (gate, up) = (leaf([4, 33], 2), leaf([4, 33], 3));
    let train = floats(CpuTrain::gelu_tanh_gated(gate.clone(), up.clone()));
    let inner = floats(Cpu::gelu_tanh_gated(gate.inner(), up.inner()));
    assert_eq!(train, inner);
}

#[test]
fn swap_middle_axes_matches_the_transposed_view() {
    check(
        [[2, 3, 4, 5]],
        |x| CpuTrain::swap_middle_axes(x[0].clone()),
        |x| swap_axes::composed(x[0].clone()),
        0.0,
    );
}
