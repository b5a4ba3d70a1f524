//! Gemma's gated MLP activation, `gelu_tanh(gate) ⊙ up`, and its backward.
//!
//! `gelu_tanh(g) = 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))`, computed as
//! the equal `g·σ(z)` with `z = 2·√(2/π)·g·(1 + 0.044715·g²)`, since
//! `0.5·(1 + tanh(t)) = σ(2t)`.

use rayon::prelude::*;

use crate::exp::exp;
use crate::{Output, TASK_ELEMENTS, wide};

/// `2·√(2/π)`.
const TWICE_SQRT_2_OVER_PI: f32 =
    (2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;
const CUBIC: f32 = 0.044715;

/// `z(g)` and `σ(z(g))`.
#[inline(always)]
fn gate_sigmoid(g: f32) -> (f32, f32) {
    let z = (g * g * (TWICE_SQRT_2_OVER_PI * CUBIC) + TWICE_SQRT_2_OVER_PI) * g;
    (z, 1.0 / (1.0 + exp(-z)))
}

/// `gelu_tanh(gate) ⊙ up`; the slices have the same length.
pub fn gelu_tanh_gated(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_same_lengths(&[gate.len(), up.len()]);
    let mut out = Output::new(gate.len());
    out.slots()
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(gate.par_chunks(TASK_ELEMENTS))
        .zip(up.par_chunks(TASK_ELEMENTS))
        .for_each(|((out, gate), up)| {
            wide(
                #[inline(always)]
                || {
                    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                        let (_, s) = gate_sigmoid(g);
                        o.write(g * s * u);
                    }
                },
            );
        });
    // SAFETY: the chunks cover the output (the lengths are equal), and each
    // task writes every element of its chunk.
    unsafe { out.written() }
}

/// The gradients of `gate` and `up` from `grad`, that of the output:
/// `grad ⊙ up ⊙ gelu_tanh'(gate)` and `grad ⊙ gelu_tanh(gate)`, where
/// `gelu_tanh'(g) = σ + g·σ·(1 − σ)·z'(g)`, `z'(g) = 2·√(2/π)·(1 + 3·0.044715·g²)`.
pub fn gelu_tanh_gated_backward(gate: &[f32], up: &[f32], grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_same_lengths(&[gate.len(), up.len(), grad.len()]);
    let (mut grad_gate, mut grad_up) = (Output::new(gate.len()), Output::new(gate.len()));
    grad_gate
        .slots()
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(grad_up.slots().par_chunks_mut(TASK_ELEMENTS))
        .zip(gate.par_chunks(TASK_ELEMENTS))
        .zip(up.par_chunks(TASK_ELEMENTS))
        .zip(grad.par_chunks(TASK_ELEMENTS))
        .for_each(|((((grad_gate, grad_up), gate), up), grad)| {
            wide(
                #[inline(always)]
                || {
                    for ((((dg, du), &g), &u), &dy) in grad_gate
                        .iter_mut()
                        .zip(grad_up.iter_mut())
                        .zip(gate)
                        .zip(up)
                        .zip(grad)
                    {
                        let (_, s) = gate_sigmoid(g);
                        let slope = TWICE_SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * g * g);
                        let derivative = s + g * s * (1.0 - s) * slope;
                        dg.write(dy * u * derivative);
                        du.write(dy * g * s);
                    }
                },
            );
        });
    // SAFETY: the chunks cover both outputs (the lengths are equal), and
    // each task writes every element of its chunks.
    unsafe { (grad_gate.written(), grad_up.written()) }
}

fn assert_same_lengths(lengths: &[usize]) {
    assert!(
        lengths.windows(2).all(|pair| pair[0] == pair[1]),
        "gated GELU: slices of different lengths {lengths:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tanh formula in f64.
    fn gelu(g: f64) -> f64 {
        let inner = (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g);
        0.5 * g * (1.0 + inner.tanh())
    }

    fn inputs() -> (Vec<f32>, Vec<f32>) {
        let gate = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
        let up = (0..2001)
            .map(|i| ((i * 37 % 13) as f32 - 6.0) / 3.0)
            .collect();
        (gate, up)
    }

    #[test]
    fn forward_matches_the_tanh_formula() {
        let (gate, up) = inputs();
        let out = gelu_tanh_gated(&gate, &up);
        for ((&g, &u), &got) in gate.iter().zip(&up).zip(&out) {
            let want = gelu(f64::from(g)) * f64::from(u);
            assert!(
                (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "g={g} u={u}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn backward_matches_the_derivative_in_f64() {
        let (gate, up) = inputs();
        let grad: Vec<f32> = (0..gate.len())
            .map(|i| ((i * 11 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let (grad_gate, grad_up) = gelu_tanh_gated_backward(&gate, &up, &grad);
        for i in 0..gate.len() {
            let (g, u, dy) = (f64::from(gate[i]), f64::from(up[i]), f64::from(grad[i]));
            let h = 1e-6;
            let slope = (gelu(g + h) - gelu(g - h)) / (2.0 * h);
            let (want_gate, want_up) = (dy * u * slope, dy * gelu(g));
            assert!(
                (f64::from(grad_gate[i]) - want_gate).abs() <= 1e-5 * want_gate.abs().max(1.0),
                "d gate at g={g}"
            );
            assert!(
                (f64::from(grad_up[i]) - want_up).abs() <= 1e-6 * want_up.abs().max(1e-3),
                "d up at g={g}"
            );
        }
    }
}
