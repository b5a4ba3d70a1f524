//! Rotary position embedding in the half-rotation layout, against cos and
//! signed-sin tables of the input's own shape:
//! `out = x ⊙ cos + swap_halves(x) ⊙ signed_sin` per head row, where
//! `swap_halves` exchanges the row's two halves. Linear in `x`, so the
//! backward is the transposed map: `dx_j = dy_j·cos_j + dy_σ(j)·sin_σ(j)`
//! with `σ` the half swap.
//!
//! The output is written heads-first (`[batch, heads, seq, head_dim]`), so
//! attention's matmuls read it contiguously and its gradient comes back
//! contiguous: a transposed view instead cost a strided copy per layer.

use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::{Output, TASK_ELEMENTS, wide};

/// The rotation's input shape `[batch, seq, heads, head_dim]`; its output
/// is `[batch, heads, seq, head_dim]`, the layout attention's matmuls read.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl RopeShape {
    fn elements(&self) -> usize {
        self.batch * self.seq * self.heads * self.head_dim
    }

    /// The input row `(b, s, h)` of output row `(b, h, s)`.
    fn input_row(&self, output_row: usize) -> usize {
        let s = output_row % self.seq;
        let h = (output_row / self.seq) % self.heads;
        let b = output_row / (self.seq * self.heads);
        (b * self.seq + s) * self.heads + h
    }

    /// The output row `(b, h, s)` of input row `(b, s, h)`.
    fn output_row(&self, input_row: usize) -> usize {
        let h = input_row % self.heads;
        let s = (input_row / self.heads) % self.seq;
        let b = input_row / (self.seq * self.heads);
        (b * self.heads + h) * self.seq + s
    }

    /// Whole head rows per task.
    fn rows_per_task(&self) -> usize {
        (TASK_ELEMENTS / self.head_dim).max(1)
    }
}

/// Rotates each head row of `x` (`shape`) and moves the heads in front of
/// the positions: the result is `[batch, heads, seq, head_dim]`. The tables
/// have `x`'s shape.
pub fn rope(x: &[f32], cos: &[f32], signed_sin: &[f32], shape: RopeShape) -> Vec<f32> {
    assert_rows(&[x.len(), cos.len(), signed_sin.len()], shape);
    let (d, rows) = (shape.head_dim, shape.rows_per_task());
    let mut out = Output::new(x.len());
    out.slots()
        .par_chunks_mut(rows * d)
        .enumerate()
        .for_each(|(task, out)| {
            wide(
                #[inline(always)]
                || {
                    for (i, out) in out.chunks_exact_mut(d).enumerate() {
                        let input = shape.input_row(task * rows + i) * d..;
                        rotate(
                            [&x[input.clone()], &cos[input.clone()], &signed_sin[input]],
                            out,
                        );
                    }
                },
            );
        });
    // SAFETY: the chunks cover the output in whole rows, and `rotate`
    // writes every element of each.
    unsafe { out.written() }
}

/// `out = x ⊙ cos + swap_halves(x) ⊙ signed_sin` for one head row (the
/// first `out.len()` elements of `x`, `cos` and `sin`).
#[inline(always)]
fn rotate([x, cos, sin]: [&[f32]; 3], out: &mut [MaybeUninit<f32>]) {
    let half = out.len() / 2;
    let [x1, x2, cos1, cos2, sin1, sin2] = halves([x, cos, sin], half);
    let (out1, out2) = out.split_at_mut(half);
    let (out1, out2) = (&mut out1[..half], &mut out2[..half]);
    for i in 0..half {
        out1[i].write(x1[i] * cos1[i] + x2[i] * sin1[i]);
        out2[i].write(x2[i] * cos2[i] + x1[i] * sin2[i]);
    }
}

/// The two halves of the first `2·half` elements of each of three rows,
/// each exactly `half` long: with every length known to the compiler, the
/// rotations' loops run without bounds checks.
#[inline(always)]
fn halves(rows: [&[f32]; 3], half: usize) -> [&[f32]; 6] {
    let [a, b, c] = rows.map(|row| (&row[..half], &row[half..2 * half]));
    [a.0, a.1, b.0, b.1, c.0, c.1]
}

/// The transpose of [`rotate`] for one head row: `dx_j = dy_j·cos_j +
/// dy_σ(j)·sin_σ(j)`, each half's sin taken from the other half.
#[inline(always)]
fn rotate_back([dy, cos, sin]: [&[f32]; 3], dx: &mut [MaybeUninit<f32>]) {
    let half = dx.len() / 2;
    let [dy1, dy2, cos1, cos2, sin1, sin2] = halves([dy, cos, sin], half);
    let (dx1, dx2) = dx.split_at_mut(half);
    let (dx1, dx2) = (&mut dx1[..half], &mut dx2[..half]);
    for i in 0..half {
        dx1[i].write(dy1[i] * cos1[i] + dy2[i] * sin2[i]);
        dx2[i].write(dy2[i] * cos2[i] + dy1[i] * sin1[i]);
    }
}

/// The gradient of `x` (`shape`) from `grad`, that of the output
/// (`[batch, heads, seq, head_dim]`).
pub fn rope_backward(grad: &[f32], cos: &[f32], signed_sin: &[f32], shape: RopeShape) -> Vec<f32> {
    assert_rows(&[grad.len(), cos.len(), signed_sin.len()], shape);
    let (d, rows) = (shape.head_dim, shape.rows_per_task());
    let mut grad_x = Output::new(grad.len());
    grad_x
        .slots()
        .par_chunks_mut(rows * d)
        .enumerate()
        .for_each(|(task, grad_x)| {
            wide(
                #[inline(always)]
                || {
                    for (i, dx) in grad_x.chunks_exact_mut(d).enumerate() {
                        let row = task * rows + i;
                        let dy = &grad[shape.output_row(row) * d..];
                        rotate_back([dy, &cos[row * d..], &signed_sin[row * d..]], dx);
                    }
                },
            );
        });
    // SAFETY: the chunks cover the gradient in whole rows, and
    // `rotate_back` writes every element of each.
    unsafe { grad_x.written() }
}

fn assert_rows(lengths: &[usize], shape: RopeShape) {
    assert!(
        shape.head_dim > 0 && shape.head_dim.is_multiple_of(2),
        "rope: head_dim {} is not a positive even number",
        shape.head_dim
    );
    assert!(
        lengths.iter().all(|&len| len == shape.elements()),
        "rope: slices of lengths {lengths:?} for {shape:?}"
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

    fn shape(batch: usize, seq: usize, heads: usize) -> RopeShape {
        RopeShape {
            batch,
            seq,
            heads,
            head_dim: 4,
        }
    }

    #[test]
    fn output_rows_are_heads_first() {
        // batch 2, seq 3, heads 2: input row (b, s, h) holds the value 100b + 10s + h
        // in every entry, and the tables are the identity (cos 1, sin 0).
        let shape = shape(2, 3, 2);
        let n = 2 * 3 * 2 * 4;
        let x: Vec<f32> = (0..n)
            .map(|i| i / 4)
            .map(|r| (100 * (r / 6) + 10 * (r / 2 % 3) + r % 2) as f32)
            .collect();
        let (cos, sin) = (vec![1.0; n], vec![0.0; n]);
        let out = rope(&x, &cos, &sin, shape);
        let rows: Vec<f32> = out.chunks(4).map(|row| row[0]).collect();
        // (b, h, s) order
        assert_eq!(
            rows,
            [
                0.0, 10.0, 20.0, 1.0, 11.0, 21.0, 100.0, 110.0, 120.0, 101.0, 111.0, 121.0
            ]
        );
        let back = rope_backward(&out, &cos, &sin, shape);
        assert_eq!(back, x);
    }

    #[test]
    fn forward_rotates_pairs_i_and_i_plus_half() {
        let angles = [[0.0, 0.0], [2.0, 0.2]];
        let (cos, sin) = tables(&angles);
        let x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        let out = rope(&x, &cos, &sin, shape(1, 2, 1));
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
        let shape = shape(1, 3, 2);
        let (y, dx) = (
            rope(&x, &cos, &sin, shape),
            rope_backward(&g, &cos, &sin, shape),
        );
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
            let column = rope(&unit, &cos, &sin, shape);
            let want = dot(&column, &g);
            assert!((f64::from(dx[j]) - want).abs() < 1e-6, "dx[{j}]");
        }
    }
}
