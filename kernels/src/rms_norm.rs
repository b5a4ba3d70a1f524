//! Gemma's RMSNorm over the last axis, `x · r · (1 + w)` with
//! `r = 1 / sqrt(mean(x²) + eps)` per row, and its backward.

use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::{Output, TASK_ELEMENTS, lanes, wide};

fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMENTS / row_len.max(1)).max(1)
}

/// `x · r · (1 + weight)` per row of `weight.len()`, and each row's `r`,
/// which the backward needs.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let row_len = weight.len();
    assert_rows(x.len(), row_len);
    let rows = rows_per_task(row_len);
    let (mut out, mut inv_rms) = (Output::new(x.len()), Output::new(x.len() / row_len));
    out.slots()
        .par_chunks_mut(rows * row_len)
        .zip(inv_rms.slots().par_chunks_mut(rows))
        .zip(x.par_chunks(rows * row_len))
        .for_each(|((out, inv_rms), x)| {
            wide(
                #[inline(always)]
                || {
                    for ((out, r), x) in out
                        .chunks_exact_mut(row_len)
                        .zip(inv_rms.iter_mut())
                        .zip(x.chunks_exact(row_len))
                    {
                        let r = *r.write(1.0 / (lanes::dot(x, x) / row_len as f32 + eps).sqrt());
                        for ((o, &x), &w) in out.iter_mut().zip(x).zip(weight) {
                            o.write(x * r * (1.0 + w));
                        }
                    }
                },
            );
        });
    // SAFETY: the chunks cover both outputs (whole rows, one `r` per row),
    // and each task writes every row of its chunk and its `r`.
    unsafe { (out.written(), inv_rms.written()) }
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
) -> (Vec<f32>, Vec<f32>) {
    let row_len = weight.len();
    assert_rows(x.len(), row_len);
    assert!(
        inv_rms.len() * row_len == x.len() && grad.len() == x.len(),
        "RMSNorm backward: {} rows of r and a gradient of {} for {} inputs",
        inv_rms.len(),
        grad.len(),
        x.len()
    );
    let rows = rows_per_task(row_len);
    let mut grad_x = Output::new(x.len());
    let partials: Vec<Vec<f32>> = grad_x
        .slots()
        .par_chunks_mut(rows * row_len)
        .zip(inv_rms.par_chunks(rows))
        .zip(x.par_chunks(rows * row_len))
        .zip(grad.par_chunks(rows * row_len))
        .map(|(((grad_x, inv_rms), x), grad)| {
            wide(
                #[inline(always)]
                || backward_rows(grad_x, inv_rms, x, grad, weight),
            )
        })
        .collect();
    let mut grad_weight = vec![0.0f32; row_len];
    for partial in partials {
        for (total, part) in grad_weight.iter_mut().zip(partial) {
            *total += part;
        }
    }
    // SAFETY: the chunks cover `grad_x` (whole rows), and `backward_rows`
    // writes every row of its chunk.
    (unsafe { grad_x.written() }, grad_weight)
}

/// One task's rows of the backward: writes their `dx`, returns their part of `dw`.
#[inline(always)]
fn backward_rows(
    grad_x: &mut [MaybeUninit<f32>],
    inv_rms: &[f32],
    x: &[f32],
    grad: &[f32],
    weight: &[f32],
) -> Vec<f32> {
    let row_len = weight.len();
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
            dx.write(r * s - along * x);
            *dw += g * x * r;
        }
    }
    grad_weight
}

fn assert_rows(x: usize, row_len: usize) {
    assert!(
        row_len > 0 && x.is_multiple_of(row_len),
        "RMSNorm: {x} inputs are not whole rows of {row_len}"
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
        let (out, inv_rms) = rms_norm(&x, &w, 1e-6);
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
        let (_, inv_rms) = rms_norm(&x, &w, eps as f32);
        let (grad_x, grad_w) = rms_norm_backward(&x, &w, &inv_rms, &c);
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
