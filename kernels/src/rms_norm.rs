//! Gemma's RMSNorm over the last axis, `x · r · (1 + w)` with
//! `r = 1 / sqrt(mean(x²) + eps)` per row, and its backward.

use rayon::prelude::*;

use crate::TASK_ELEMENTS;
use crate::lanes;

fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMENTS / row_len.max(1)).max(1)
}

/// `out = x · r · (1 + weight)` per row of `weight.len()`; `inv_rms` gets
/// each row's `r`, which the backward needs.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32], inv_rms: &mut [f32]) {
    let row_len = weight.len();
    assert_rows(x.len(), out.len(), inv_rms.len(), row_len);
    let rows = rows_per_task(row_len);
    out.par_chunks_mut(rows * row_len)
        .zip(inv_rms.par_chunks_mut(rows))
        .zip(x.par_chunks(rows * row_len))
        .for_each(|((out, inv_rms), x)| {
            for ((out, r), x) in out
                .chunks_exact_mut(row_len)
                .zip(inv_rms.iter_mut())
                .zip(x.chunks_exact(row_len))
            {
                *r = 1.0 / (lanes::dot(x, x) / row_len as f32 + eps).sqrt();
                for ((o, &x), &w) in out.iter_mut().zip(x).zip(weight) {
                    *o = x * *r * (1.0 + w);
                }
            }
        });
}

/// The gradients of `x` and `weight` from `grad`, that of the output:
/// with `g = grad ⊙ (1 + w)`, `dx = r·g − (r³/n)·x·Σ g ⊙ x` per row, and
/// `dw = Σ_rows grad ⊙ x · r`. The row sums of `dw` are taken per task and
/// then in task order, so the result does not depend on thread timing.
pub fn rms_norm_backward(
    x: &[f32],
    weight: &[f32],
    inv_rms: &[f32],
    grad: &[f32],
    grad_x: &mut [f32],
    grad_weight: &mut [f32],
) {
    let row_len = weight.len();
    assert_rows(x.len(), grad_x.len(), inv_rms.len(), row_len);
    assert_eq!(
        grad.len(),
        x.len(),
        "RMSNorm backward: gradient of another shape"
    );
    assert_eq!(
        grad_weight.len(),
        row_len,
        "RMSNorm backward: weight gradient of another shape"
    );
    let rows = rows_per_task(row_len);
    let partials: Vec<Vec<f32>> = grad_x
        .par_chunks_mut(rows * row_len)
        .zip(inv_rms.par_chunks(rows))
        .zip(x.par_chunks(rows * row_len))
        .zip(grad.par_chunks(rows * row_len))
        .map(|(((grad_x, inv_rms), x), grad)| {
            let mut grad_weight = vec![0.0f32; row_len];
            let mut scaled = vec![0.0f32; row_len];
            for (((grad_x, &r), x), grad) in grad_x
                .chunks_exact_mut(row_len)
                .zip(inv_rms)
                .zip(x.chunks_exact(row_len))
                .zip(grad.chunks_exact(row_len))
            {
                for ((s, &g), &w) in scaled.iter_mut().zip(grad).zip(weight) {
                    *s = g * (1.0 + w);
                }
                let along = lanes::dot(&scaled, x) * r * r * r / row_len as f32;
                for (((dx, &s), &x), (dw, &g)) in grad_x
                    .iter_mut()
                    .zip(&scaled)
                    .zip(x)
                    .zip(grad_weight.iter_mut().zip(grad))
                {
                    *dx = r * s - along * x;
                    *dw += g * x * r;
                }
            }
            grad_weight
        })
        .collect();
    grad_weight.fill(0.0);
    for partial in partials {
        for (total, part) in grad_weight.iter_mut().zip(partial) {
            *total += part;
        }
    }
}

fn assert_rows(x: usize, out: usize, inv_rms: usize, row_len: usize) {
    assert!(
        row_len > 0 && x == out && x == inv_rms * row_len,
        "RMSNorm: {x} inputs, {out} outputs and {inv_rms} rows of {row_len} do not agree"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ_i c_i · y_i` in f64, the loss whose gradients the backward gives.
    fn loss(x: &[f64], w: &[f64], c: &[f64], eps: f64) -> f64 {
        let n = w.len();
        x.chunks(n)
            .zip(c.chunks(n))
            .map(|(x, c)| {
                let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
                (0..n).map(|j| c[j] * x[j] * r * (1.0 + w[j])).sum::<f64>()
            })
            .sum()
    }

    fn example() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (rows, n) = (5, 12);
        let x = (0..rows * n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
            .collect();
        let w = (0..n).map(|j| (j as f32 - 6.0) / 10.0).collect();
        let c = (0..rows * n)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0)
            .collect();
        (x, w, c)
    }

    #[test]
    fn forward_matches_the_formula_in_f64() {
        let (x, w, _) = example();
        let n = w.len();
        let (mut out, mut inv_rms) = (vec![0.0; x.len()], vec![0.0; x.len() / n]);
        rms_norm(&x, &w, 1e-6, &mut out, &mut inv_rms);
        for (row, (x, out)) in x.chunks(n).zip(out.chunks(n)).enumerate() {
            let r = 1.0
                / (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64 + 1e-6).sqrt();
            assert!((f64::from(inv_rms[row]) - r).abs() <= 1e-6 * r);
            for j in 0..n {
                let want = f64::from(x[j]) * r * (1.0 + f64::from(w[j]));
                assert!((f64::from(out[j]) - want).abs() <= 1e-6 * want.abs().max(1e-3));
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (x, w, c) = example();
        let n = w.len();
        let eps = 1e-6;
        let (mut out, mut inv_rms) = (vec![0.0; x.len()], vec![0.0; x.len() / n]);
        rms_norm(&x, &w, eps as f32, &mut out, &mut inv_rms);
        let (mut grad_x, mut grad_w) = (vec![0.0; x.len()], vec![0.0; n]);
        rms_norm_backward(&x, &w, &inv_rms, &c, &mut grad_x, &mut grad_w);
        let to64 = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let (x64, w64, c64) = (to64(&x), to64(&w), to64(&c));
        let h = 1e-5;
        for i in 0..x.len() {
            let (mut up, mut down) = (x64.clone(), x64.clone());
            up[i] += h;
            down[i] -= h;
            let want = (loss(&up, &w64, &c64, eps) - loss(&down, &w64, &c64, eps)) / (2.0 * h);
            assert!(
                (f64::from(grad_x[i]) - want).abs() <= 1e-4 * want.abs().max(1.0),
                "dx[{i}]"
            );
        }
        for j in 0..n {
            let (mut up, mut down) = (w64.clone(), w64.clone());
            up[j] += h;
            down[j] -= h;
            let want = (loss(&x64, &up, &c64, eps) - loss(&x64, &down, &c64, eps)) / (2.0 * h);
            assert!(
                (f64::from(grad_w[j]) - want).abs() <= 1e-4 * want.abs().max(1.0),
                "dw[{j}]"
            );
        }
    }
}
