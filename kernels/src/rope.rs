//! Rotary position embedding in the half-rotation layout, against cos and
//! signed-sin tables of the input's own shape:
//! `out = x ⊙ cos + swap_halves(x) ⊙ signed_sin` per head row, where
//! `swap_halves` exchanges the row's two halves. Linear in `x`, so the
//! backward is the transposed map: `dx_j = dy_j·cos_j + dy_σ(j)·sin_σ(j)`
//! with `σ` the half swap.

use rayon::prelude::*;

use crate::TASK_ELEMENTS;

/// Whole head rows per task.
fn task_len(head_dim: usize) -> usize {
    (TASK_ELEMENTS / head_dim).max(1) * head_dim
}

/// Rotates each row of `head_dim` (even) of `x` into `out`.
pub fn rope(x: &[f32], cos: &[f32], signed_sin: &[f32], head_dim: usize, out: &mut [f32]) {
    assert_rows(&[x.len(), cos.len(), signed_sin.len(), out.len()], head_dim);
    let half = head_dim / 2;
    let task = task_len(head_dim);
    out.par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .zip(cos.par_chunks(task).zip(signed_sin.par_chunks(task)))
        .for_each(|((out, x), (cos, sin))| {
            for (((out, x), cos), sin) in out
                .chunks_exact_mut(head_dim)
                .zip(x.chunks_exact(head_dim))
                .zip(cos.chunks_exact(head_dim))
                .zip(sin.chunks_exact(head_dim))
            {
                let (x1, x2) = x.split_at(half);
                let (out1, out2) = out.split_at_mut(half);
                let (cos1, cos2) = cos.split_at(half);
                let (sin1, sin2) = sin.split_at(half);
                for i in 0..half {
                    out1[i] = x1[i] * cos1[i] + x2[i] * sin1[i];
                    out2[i] = x2[i] * cos2[i] + x1[i] * sin2[i];
                }
            }
        });
}

/// The gradient of `x` from `grad`, that of the output.
pub fn rope_backward(
    grad: &[f32],
    cos: &[f32],
    signed_sin: &[f32],
    head_dim: usize,
    grad_x: &mut [f32],
) {
    assert_rows(
        &[grad.len(), cos.len(), signed_sin.len(), grad_x.len()],
        head_dim,
    );
    let half = head_dim / 2;
    let task = task_len(head_dim);
    grad_x
        .par_chunks_mut(task)
        .zip(grad.par_chunks(task))
        .zip(cos.par_chunks(task).zip(signed_sin.par_chunks(task)))
        .for_each(|((grad_x, grad), (cos, sin))| {
            for (((dx, dy), cos), sin) in grad_x
                .chunks_exact_mut(head_dim)
                .zip(grad.chunks_exact(head_dim))
                .zip(cos.chunks_exact(head_dim))
                .zip(sin.chunks_exact(head_dim))
            {
                let (dy1, dy2) = dy.split_at(half);
                let (dx1, dx2) = dx.split_at_mut(half);
                let (cos1, cos2) = cos.split_at(half);
                let (sin1, sin2) = sin.split_at(half);
                for i in 0..half {
                    dx1[i] = dy1[i] * cos1[i] + dy2[i] * sin2[i];
                    dx2[i] = dy2[i] * cos2[i] + dy1[i] * sin1[i];
                }
            }
        });
}

fn assert_rows(lengths: &[usize], head_dim: usize) {
    assert!(
        head_dim > 0 && head_dim % 2 == 0,
        "rope: head_dim {head_dim} is not a positive even number"
    );
    assert!(
        lengths.windows(2).all(|pair| pair[0] == pair[1]) && lengths[0] % head_dim == 0,
        "rope: slices of lengths {lengths:?} are not the same whole number of rows of {head_dim}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two positions' tables for head_dim 4 (angles a, b for pairs (0, 2), (1, 3)).
    fn tables(angles: &[[f32; 2]]) -> (Vec<f32>, Vec<f32>) {
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for [a, b] in angles {
            cos.extend([a.cos(), b.cos(), a.cos(), b.cos()]);
            sin.extend([-a.sin(), -b.sin(), a.sin(), b.sin()]);
        }
        (cos, sin)
    }

    #[test]
    fn forward_rotates_pairs_i_and_i_plus_half() {
        let angles = [[0.0, 0.0], [2.0, 0.2]];
        let (cos, sin) = tables(&angles);
        let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 8];
        rope(&x, &cos, &sin, 4, &mut out);
        assert_eq!(&out[..4], &[1.0, 2.0, 3.0, 4.0]);
        let (c0, s0, c1, s1) = (2.0f32.cos(), 2.0f32.sin(), 0.2f32.cos(), 0.2f32.sin());
        let want = [
            c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + s0,
            4.0 * c1 + 2.0 * s1,
        ];
        for (got, want) in out[4..].iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn backward_is_the_transpose() {
        // <rope(x), g> = <x, rope_backward(g)> for a linear map and its transpose.
        let angles: Vec<[f32; 2]> = (0..6).map(|p| [p as f32 * 0.7, p as f32 * 0.07]).collect();
        let (cos, sin) = tables(&angles);
        let n = cos.len();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
        rope(&x, &cos, &sin, 4, &mut y);
        rope_backward(&g, &cos, &sin, 4, &mut dx);
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>()
        };
        let (left, right) = (dot(&y, &g), dot(&x, &dx));
        assert!(
            (left - right).abs() < 1e-5 * left.abs().max(1.0),
            "{left} vs {right}"
        );
        // and each entry of the transpose, against the dense matrix of the map
        for j in 0..n {
            let mut unit = vec![0.0; n];
            unit[j] = 1.0;
            let mut column = vec![0.0; n];
            rope(&unit, &cos, &sin, 4, &mut column);
            let want = dot(&column, &g);
            assert!((f64::from(dx[j]) - want).abs() < 1e-6, "dx[{j}]");
        }
    }
}
