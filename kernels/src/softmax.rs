//! Scaled, masked softmax over the last axis: the attention probabilities
//! `softmax(where(blocked, f32::MIN, scale·scores))`, and its backward.
//!
//! `f32::MIN` rather than `-inf`, as transformers' eager attention: a row
//! whose keys are all blocked (a padded query) becomes uniform instead of
//! NaN, and its gradient is zero like every blocked entry's.

use crate::exp::exp;
use crate::lanes;

/// In place over one row: `row = softmax(where(blocked, f32::MIN, scale·row))`.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32], blocked: &[u8], scale: f32) {
    assert_eq!(row.len(), blocked.len(), "softmax: row and mask lengths");
    for (p, &b) in row.iter_mut().zip(blocked) {
        *p = if b != 0 { f32::MIN } else { *p * scale };
    }
    let max = lanes::max(row);
    for p in row.iter_mut() {
        *p = exp(*p - max);
    }
    let total = lanes::sum(row);
    for p in row.iter_mut() {
        *p /= total;
    }
}

/// In place over one row: `grad`, that of the probabilities `probs`,
/// becomes that of the scores: `scale · p ⊙ (grad − Σ grad ⊙ p)`, zero
/// where blocked.
#[inline(always)]
pub(crate) fn softmax_row_backward(probs: &[f32], grad: &mut [f32], blocked: &[u8], scale: f32) {
    assert!(
        probs.len() == grad.len() && grad.len() == blocked.len(),
        "softmax backward: row lengths"
    );
    let dot = lanes::dot(probs, grad);
    for ((g, &p), &b) in grad.iter_mut().zip(probs).zip(blocked) {
        *g = if b != 0 { 0.0 } else { scale * p * (*g - dot) };
    }
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

    fn forward(scores: &[f32], blocked: &[u8], row_len: usize, scale: f32) -> Vec<f32> {
        let mut probs = scores.to_vec();
        for (row, blocked) in probs.chunks_mut(row_len).zip(blocked.chunks(row_len)) {
            softmax_row(row, blocked, scale);
        }
        probs
    }

    #[test]
    fn forward_matches_the_f64_softmax() {
        let (rows, row_len, scale) = (300, 37, 0.125);
        let (scores, blocked) = example(rows, row_len);
        let probs = forward(&scores, &blocked, row_len, scale);
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
        let probs = forward(&scores, &blocked, row_len, scale);
        let mut got = grad.clone();
        for ((probs, got), blocked) in probs
            .chunks(row_len)
            .zip(got.chunks_mut(row_len))
            .zip(blocked.chunks(row_len))
        {
            softmax_row_backward(probs, got, blocked, scale);
        }
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
