//! Each row's log-probability of its target token under a softmax over the
//! vocabulary, with the row's logging statistics, in one pass per row; and
//! its backward.
//!
//! Why: composed from tensor ops (shift, exp, sum, log, gather, then the
//! statistics' exp, product and sums), it was about ten single-threaded
//! passes over the `[tokens, vocab]` logits on the CPU backend, forward and
//! backward, while the other core waited.

use rayon::prelude::*;

use crate::exp::exp;
use crate::{Output, TASK_ELEMENTS, lanes, wide};

/// One row's statistics, for logging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowStats {
    /// The mean of the row's logits over the vocabulary.
    pub mean_logit: f32,
    /// The entropy of the row's softmax, `−Σ p·log p`.
    pub entropy: f32,
    /// Whether the target is the row's largest logit (the first, on ties).
    pub target_is_top: bool,
}

/// [`token_logps`]'s results: per row, the target's log-probability, the
/// log-normaliser `max + log Σ exp(x − max)` that the backward needs, and
/// the statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogps {
    pub logps: Vec<f32>,
    pub log_normalizers: Vec<f32>,
    pub stats: Vec<RowStats>,
}

/// Rows of `vocab` per rayon task.
fn rows_per_task(vocab: usize) -> usize {
    (TASK_ELEMENTS / vocab).max(1)
}

/// `log_softmax(row)[target]` for each row of `logits` (`targets.len()`
/// rows of `vocab`), computed as `(x_t − max) − log Σ exp(x − max)`.
pub fn token_logps(logits: &[f32], vocab: usize, targets: &[usize]) -> TokenLogps {
    check(logits.len(), vocab, targets);
    let rows = rows_per_task(vocab);
    let per_row: Vec<(f32, f32, RowStats)> = logits
        .par_chunks(rows * vocab)
        .zip(targets.par_chunks(rows))
        .flat_map_iter(|(logits, targets)| {
            wide(
                #[inline(always)]
                || {
                    logits
                        .chunks_exact(vocab)
                        .zip(targets)
                        .map(|(row, &target)| row_logp(row, target))
                        .collect::<Vec<_>>()
                },
            )
        })
        .collect();
    TokenLogps {
        logps: per_row.iter().map(|r| r.0).collect(),
        log_normalizers: per_row.iter().map(|r| r.1).collect(),
        stats: per_row.iter().map(|r| r.2).collect(),
    }
}

/// One row: its target's log-probability, its log-normaliser and its statistics.
#[inline(always)]
fn row_logp(row: &[f32], target: usize) -> (f32, f32, RowStats) {
    let max = lanes::max(row);
    let mut total = 0.0;
    let mut weighted = 0.0;
    // Σ exp(x − max) and Σ exp(x − max)·(x − max), eight lanes each.
    let mut sums = [0.0f32; 8];
    let mut weighted_sums = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..8 {
            let shifted = chunk[lane] - max;
            let e = exp(shifted);
            sums[lane] += e;
            weighted_sums[lane] += e * shifted;
        }
    }
    for lane in 0..8 {
        total += sums[lane];
        weighted += weighted_sums[lane];
    }
    for &x in tail {
        let shifted = x - max;
        let e = exp(shifted);
        total += e;
        weighted += e * shifted;
    }
    let log_total = total.ln();
    // −Σ p·(shifted − log_total) with p = e / total.
    let entropy = log_total - weighted / total;
    let top = row.iter().position(|&x| x == max).unwrap_or(usize::MAX);
    let stats = RowStats {
        mean_logit: lanes::sum(row) / row.len() as f32,
        entropy,
        target_is_top: top == target,
    };
    ((row[target] - max) - log_total, max + log_total, stats)
}

/// The gradient of the logits from `grad`, that of each row's target
/// log-probability: `grad · (onehot(target) − softmax(row))`.
pub fn token_logps_backward(
    logits: &[f32],
    vocab: usize,
    targets: &[usize],
    log_normalizers: &[f32],
    grad: &[f32],
) -> Vec<f32> {
    check(logits.len(), vocab, targets);
    assert!(
        log_normalizers.len() == targets.len() && grad.len() == targets.len(),
        "token log-probs backward: {} normalisers and {} gradients for {} rows",
        log_normalizers.len(),
        grad.len(),
        targets.len()
    );
    let rows = rows_per_task(vocab);
    let mut out = Output::new(logits.len());
    out.slots()
        .par_chunks_mut(rows * vocab)
        .zip(logits.par_chunks(rows * vocab))
        .zip(targets.par_chunks(rows))
        .zip(log_normalizers.par_chunks(rows).zip(grad.par_chunks(rows)))
        .for_each(|(((out, logits), targets), (normalizers, grad))| {
            wide(
                #[inline(always)]
                || {
                    for ((((out, row), &target), &normalizer), &g) in out
                        .chunks_exact_mut(vocab)
                        .zip(logits.chunks_exact(vocab))
                        .zip(targets)
                        .zip(normalizers)
                        .zip(grad)
                    {
                        for (o, &x) in out.iter_mut().zip(row) {
                            o.write(-g * exp(x - normalizer));
                        }
                        let p_target = exp(row[target] - normalizer);
                        out[target].write(g * (1.0 - p_target));
                    }
                },
            );
        });
    // SAFETY: the chunks cover the output in whole rows, and every element
    // of each row is written.
    unsafe { out.written() }
}

fn check(len: usize, vocab: usize, targets: &[usize]) {
    assert!(
        vocab > 0 && len == targets.len() * vocab,
        "token log-probs: {len} logits for {} rows of {vocab}",
        targets.len()
    );
    assert!(
        targets.iter().all(|&t| t < vocab),
        "token log-probs: a target outside the vocabulary of {vocab}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(rows: usize, vocab: usize) -> (Vec<f32>, Vec<usize>) {
        let logits = (0..rows * vocab)
            .map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 60.0)
            .collect();
        let targets = (0..rows).map(|r| (r * 37) % vocab).collect();
        (logits, targets)
    }

    /// The textbook formulas in f64 for one row.
    fn reference(row: &[f32], target: usize) -> (f64, f64, f64) {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let log_z = x.iter().map(|v| v.exp()).sum::<f64>().ln();
        let entropy = -x
            .iter()
            .map(|v| (v - log_z).exp() * (v - log_z))
            .sum::<f64>();
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        (x[target] - log_z, entropy, mean)
    }

    #[test]
    fn forward_matches_the_f64_formulas() {
        let (vocab, rows) = (301, 200);
        let (logits, targets) = example(rows, vocab);
        let got = token_logps(&logits, vocab, &targets);
        for (r, (row, &target)) in logits.chunks(vocab).zip(&targets).enumerate() {
            let (logp, entropy, mean) = reference(row, target);
            let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-5 * b.abs().max(1.0);
            assert!(
                close(got.logps[r], logp),
                "row {r}: {} vs {logp}",
                got.logps[r]
            );
            assert!(close(got.stats[r].entropy, entropy), "row {r} entropy");
            assert!(close(got.stats[r].mean_logit, mean), "row {r} mean");
            let top = row
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            assert_eq!(got.stats[r].target_is_top, top == target, "row {r} top");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (vocab, rows) = (13, 3);
        let (logits, targets) = example(rows, vocab);
        let grad = [0.5f32, -1.5, 2.0];
        let forward = token_logps(&logits, vocab, &targets);
        let got = token_logps_backward(&logits, vocab, &targets, &forward.log_normalizers, &grad);
        // d/dx of Σ_r grad_r · logp_r, in f64 by central differences.
        let loss = |x: &[f32], j: usize, h: f64| -> f64 {
            (0..rows)
                .map(|r| {
                    let row: Vec<f64> = (0..vocab)
                        .map(|c| {
                            f64::from(x[r * vocab + c]) + if r * vocab + c == j { h } else { 0.0 }
                        })
                        .collect();
                    let log_z = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                    f64::from(grad[r]) * (row[targets[r]] - log_z)
                })
                .sum()
        };
        for (j, &got) in got.iter().enumerate() {
            let want = (loss(&logits, j, 1e-5) - loss(&logits, j, -1e-5)) / 2e-5;
            assert!(
                (f64::from(got) - want).abs() <= 1e-4,
                "d logits[{j}]: {got} vs {want}"
            );
        }
    }
}
