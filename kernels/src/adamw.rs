//! One AdamW update of an fp32 parameter in one multi-threaded pass, with
//! the arithmetic of `torch.optim.AdamW` as `align::train::adamw` composes
//! it from tensor ops: the same operations on the same `f32` values in the
//! same order, so the result is the same bits.
//!
//! Why: composed, the update is about ten whole-tensor passes per parameter,
//! each on one thread of the CPU backend while the other core waits (a
//! quarter of the serial time left in the CPU bench's step).

use rayon::prelude::*;

use crate::{Output, TASK_ELEMENTS, wide};

/// The update's scalars, each rounded to `f32` as a tensor op's scalar is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// `1 − lr·weight_decay`, applied to the value first.
    pub decay: f32,
    /// `1 − β₁`.
    pub one_minus_beta1: f32,
    /// `β₂` and `1 − β₂`.
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
}

impl AdamWScalars {
    /// The scalars of torch's update number `step` (from 1) at learning
    /// rate `lr`: computed in f64, then each rounded to `f32`.
    pub fn for_step(
        lr: f64,
        weight_decay: f64,
        (beta1, beta2): (f64, f64),
        eps: f64,
        step: i32,
    ) -> Self {
        Self {
            decay: (1.0 - lr * weight_decay) as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias_correction2_sqrt: (1.0 - beta2.powi(step)).sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(step))) as f32,
        }
    }
}

/// The updated parameter and moments of one parameter, in that order:
/// `m ← m + (g − m)(1 − β₁)`, `v ← v·β₂ + g·g·(1 − β₂)`,
/// `p ← p·decay − m / (√v / √(1 − β₂ᵗ) + ε) · step_size`.
pub fn adamw(
    value: &[f32],
    grad: &[f32],
    exp_avg: &[f32],
    exp_avg_sq: &[f32],
    scalars: AdamWScalars,
) -> [Vec<f32>; 3] {
    let len = value.len();
    assert!(
        [grad.len(), exp_avg.len(), exp_avg_sq.len()] == [len; 3],
        "adamw: a parameter of {len} with gradient and moments of {}, {} and {}",
        grad.len(),
        exp_avg.len(),
        exp_avg_sq.len()
    );
    let [mut new_value, mut new_avg, mut new_avg_sq] = [(); 3].map(|()| Output::new(len));
    new_value
        .slots()
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(new_avg.slots().par_chunks_mut(TASK_ELEMENTS))
        .zip(new_avg_sq.slots().par_chunks_mut(TASK_ELEMENTS))
        .zip(
            value
                .par_chunks(TASK_ELEMENTS)
                .zip(grad.par_chunks(TASK_ELEMENTS)),
        )
        .zip(
            exp_avg
                .par_chunks(TASK_ELEMENTS)
                .zip(exp_avg_sq.par_chunks(TASK_ELEMENTS)),
        )
        .for_each(|((((p_out, m_out), v_out), (p, g)), (m, v))| {
            wide(
                #[inline(always)]
                || {
                    let (s, n) = (scalars, p_out.len());
                    let (p, g, m, v) = (&p[..n], &g[..n], &m[..n], &v[..n]);
                    let (m_out, v_out) = (&mut m_out[..n], &mut v_out[..n]);
                    for i in 0..n {
                        let grad = g[i];
                        let avg = m[i] + (grad - m[i]) * s.one_minus_beta1;
                        let avg_sq = v[i] * s.beta2 + grad * grad * s.one_minus_beta2;
                        let denom = avg_sq.sqrt() / s.bias_correction2_sqrt + s.eps;
                        p_out[i].write(p[i] * s.decay - avg / denom * s.step_size);
                        m_out[i].write(avg);
                        v_out[i].write(avg_sq);
                    }
                },
            );
        });
    // SAFETY: the chunks cover all three outputs (every length is `len`),
    // and each task writes every element of its chunks.
    unsafe { [new_value.written(), new_avg.written(), new_avg_sq.written()] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.optim.AdamW's step 2 on one scalar, by hand in f64: lr 0.1,
    /// weight decay 0.01, gradients 1 then -2, from p = 1 (the example of
    /// `align::train::adamw`'s tests).
    #[test]
    fn two_steps_match_torch_worked_by_hand() {
        let (lr, wd, b1, b2, eps) = (0.1f64, 0.01f64, 0.9f64, 0.999f64, 1e-8f64);
        let scalars = |t| AdamWScalars::for_step(lr, wd, (b1, b2), eps, t);
        let [p1, m1, v1] = adamw(&[1.0], &[1.0], &[0.0], &[0.0], scalars(1));
        let [p2, m2, v2] = adamw(&p1, &[-2.0], &m1, &v1, scalars(2));
        // torch's step by hand: decay, moments, bias-corrected step.
        let step = |p: f64, m: f64, v: f64, g: f64, t: i32| {
            let (m, v) = (b1 * m + (1.0 - b1) * g, b2 * v + (1.0 - b2) * g * g);
            let denom = v.sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
            (
                p * (1.0 - lr * wd) - lr / (1.0 - b1.powi(t)) * m / denom,
                m,
                v,
            )
        };
        let (p1_want, m1_want, v1_want) = step(1.0, 0.0, 0.0, 1.0, 1);
        let (p2_want, m2_want, v2_want) = step(p1_want, m1_want, v1_want, -2.0, 2);
        assert!((f64::from(p1[0]) - p1_want).abs() < 1e-6, "{}", p1[0]);
        assert!((f64::from(m2[0]) - m2_want).abs() < 1e-7, "{}", m2[0]);
        assert!((f64::from(v2[0]) - v2_want).abs() < 1e-9, "{}", v2[0]);
        assert!(
            (f64::from(p2[0]) - p2_want).abs() < 1e-5,
            "{} vs {p2_want}",
            p2[0]
        );
    }
}
