//! Scaled, masked softmax over the last axis: the attention probabilities
//! `softmax(where(blocked, f32::MIN, scale·scores))`, and its backward.
//!
//! `f32::MIN` rather than `-inf`, as transformers' eager attention: a row
//! whose keys are all blocked (a padded query) becomes uniform instead of
//! NaN, and its gradient is zero like every blocked entry's.

use rayon::prelude::*;

use crate::TASK_ELEMENTS;
use crate::exp::exp;
use crate::lanes;

/// Rows of `row_len` per rayon task.
fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMENTS / row_len.max(1)).max(1)
}

/// `probs` = softmax over each row of `row_len` of `scale · scores`, with the
/// entries where `blocked` is non-zero set to `f32::MIN` first. All slices
/// have the same length, a multiple of `row_len`.
pub fn masked_softmax(
    scores: &[f32],
    blocked: &[u8],
    row_len: usize,
    scale: f32,
    probs: &mut [f32],
) {
    assert_same_rows(&[scores.len(), blocked.len(), probs.len()], row_len);
    let task = rows_per_task(row_len) * row_len;
    probs
        .par_chunks_mut(task)
        .zip(scores.par_chunks(task))
        .zip(blocked.par_chunks(task))
        .for_each(|((probs, scores), blocked)| {
            for ((probs, scores), blocked) in probs
                .chunks_exact_mut(row_len)
                .zip(scores.chunks_exact(row_len))
                .zip(blocked.chunks_exact(row_len))
            {
                softmax_row(scores, blocked, scale, probs);
            }
        });
}

fn softmax_row(scores: &[f32], blocked: &[u8], scale: f32, probs: &mut [f32]) {
    for ((p, &s), &b) in probs.iter_mut().zip(scores).zip(blocked) {
        *p = if b != 0 { f32::MIN } else { s * scale };
    }
    let max = lanes::max(probs);
    for p in probs.iter_mut() {
        *p = exp(*p - max);
    }
    let total = lanes::sum(probs);
    for p in probs.iter_mut() {
        *p /= total;
    }
}

/// The gradient of the scores from `grad`, that of the probabilities:
/// `scale · p ⊙ (grad − Σ grad ⊙ p)` per row, zero where blocked.
pub fn masked_softmax_backward(
    probs: &[f32],
    blocked: &[u8],
    grad: &[f32],
    row_len: usize,
    scale: f32,
    grad_scores: &mut [f32],
) {
    assert_same_rows(
        &[probs.len(), blocked.len(), grad.len(), grad_scores.len()],
        row_len,
    );
    let task = rows_per_task(row_len) * row_len;
    grad_scores
        .par_chunks_mut(task)
        .zip(probs.par_chunks(task))
        .zip(grad.par_chunks(task))
        .zip(blocked.par_chunks(task))
        .for_each(|(((out, probs), grad), blocked)| {
            for (((out, probs), grad), blocked) in out
                .chunks_exact_mut(row_len)
                .zip(probs.chunks_exact(row_len))
                .zip(grad.chunks_exact(row_len))
                .zip(blocked.chunks_exact(row_len))
            {
                let dot = lanes::dot(probs, grad);
                for (((o, &p), &g), &b) in out.iter_mut().zip(probs).zip(grad).zip(blocked) {
                    *o = if b != 0 { 0.0 } else { scale * p * (g - dot) };
                }
            }
        });
}

fn assert_same_rows(lengths: &[usize], row_len: usize) {
    assert!(
        lengths.windows(2).all(|pair| pair[0] == pair[1]),
        "masked softmax: slices of different lengths {lengths:?}"
    );
    assert!(
        row_len > 0 && lengths[0].is_multiple_of(row_len),
        "masked softmax: length {} is not a whole number of rows of {row_len}",
        lengths[0]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook softmax in f64 of one row, blocked entries excluded.
    fn reference_row(scores: &[f32], blocked: &[u8], scale: f32) -> Vec<f64> {
        let visible: Vec<bool> = blocked.iter().map(|&b| b == 0).collect();
        if !visible.contains(&true) {
            return vec![1.0 / scores.len() as f64; scores.len()];
        }
        let exps: Vec<f64> = scores
            .iter()
            .zip(&visible)
            .map(|(&s, &v)| {
                if v {
                    (f64::from(s) * f64::from(scale)).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    }

    fn example(rows: usize, row_len: usize) -> (Vec<f32>, Vec<u8>) {
        let scores = (0..rows * row_len)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        // Causal-like: row r sees its first r % row_len + 1 keys; row 1 sees none.
        let blocked = (0..rows * row_len)
            .map(|i| {
                let (row, key) = (i / row_len, i % row_len);
                u8::from(row == 1 || key > row % row_len)
            })
            .collect();
        (scores, blocked)
    }

    #[test]
    fn forward_matches_the_f64_softmax() {
        let (rows, row_len, scale) = (300, 37, 0.125);
        let (scores, blocked) = example(rows, row_len);
        let mut probs = vec![0.0; scores.len()];
        masked_softmax(&scores, &blocked, row_len, scale, &mut probs);
        for row in 0..rows {
            let span = row * row_len..(row + 1) * row_len;
            let want = reference_row(&scores[span.clone()], &blocked[span.clone()], scale);
            for (got, want) in probs[span].iter().zip(want) {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-6 * want.max(1e-30),
                    "row {row}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (rows, row_len, scale) = (4, 9, 0.5);
        let (scores, blocked) = example(rows, row_len);
        let grad: Vec<f32> = (0..scores.len())
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let mut probs = vec![0.0; scores.len()];
        masked_softmax(&scores, &blocked, row_len, scale, &mut probs);
        let mut got = vec![0.0; scores.len()];
        masked_softmax_backward(&probs, &blocked, &grad, row_len, scale, &mut got);
        // d/ds_j of Σ_i grad_i·p_i, in f64 by central differences.
        let loss = |scores: &[f64]| -> f64 {
            let mut total = 0.0;
            for row in 0..rows {
                let span = row * row_len..(row + 1) * row_len;
                let visible: Vec<bool> = blocked[span.clone()].iter().map(|&b| b == 0).collect();
                let exps: Vec<f64> = span
                    .clone()
                    .zip(&visible)
                    .map(|(i, &v)| {
                        if v {
                            (scores[i] * f64::from(scale)).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let z: f64 = exps.iter().sum();
                if z > 0.0 {
                    total += span
                        .zip(exps)
                        .map(|(i, e)| f64::from(grad[i]) * e / z)
                        .sum::<f64>();
                }
            }
            total
        };
        let base: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
        for j in 0..scores.len() {
            let h = 1e-4;
            let (mut up, mut down) = (base.clone(), base.clone());
            up[j] += h;
            down[j] -= h;
            let want = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (f64::from(got[j]) - want).abs() <= 1e-5,
                "entry {j}: {} vs {want}",
                got[j]
            );
        }
    }
}
