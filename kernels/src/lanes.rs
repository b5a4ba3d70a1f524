//! Reductions written over eight independent accumulators, so that the
//! compiler may keep them in one vector register: a plain `iter().sum()` is
//! a strict left-to-right chain it must not reorder, and stays scalar.

const LANES: usize = 8;

/// Folds `values` with `step` over eight lanes, then the lanes and the tail.
#[inline(always)]
fn fold(values: &[f32], start: f32, step: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [start; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = step(*lane, value);
        }
    }
    let folded = lanes.into_iter().fold(start, &step);
    tail.iter().fold(folded, |acc, &value| step(acc, value))
}

/// The sum of `values`.
#[inline(always)]
pub fn sum(values: &[f32]) -> f32 {
    fold(values, 0.0, |acc, value| acc + value)
}

/// The largest of `values` (`f32::MIN` for none; NaN is skipped, as by `f32::max`).
#[inline(always)]
pub fn max(values: &[f32]) -> f32 {
    fold(values, f32::MIN, f32::max)
}

/// `Σ a_i·b_i`.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(a).zip(b) {
            *lane += x * y;
        }
    }
    sum(&lanes) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_the_sequential_folds() {
        let values: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        let halves: Vec<f32> = values.iter().map(|v| v * 0.5).collect();
        // Small integers and halves: every partial sum is exact in any order.
        assert_eq!(sum(&values), values.iter().sum::<f32>());
        assert_eq!(max(&values), 50.0);
        assert_eq!(max(&[]), f32::MIN);
        let want: f32 = values.iter().zip(&halves).map(|(a, b)| a * b).sum();
        assert_eq!(dot(&values, &halves), want);
    }
}
