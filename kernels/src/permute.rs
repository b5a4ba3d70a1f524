//! Copies that lay tensors out row-major, on every core: exchanging the two
//! middle axes of a 4-D tensor (attention's `[batch, heads, seq, head_dim]
//! <-> [batch, seq, heads, head_dim]`; a transposed view would be copied
//! anyway by the next reshape, element by element and on one thread), and
//! gathering any strided view.

use rayon::prelude::*;

use crate::{Output, TASK_ELEMENTS};

/// `dst[a][c][b] = src[a][b][c]` (rows of `inner` elements) for `src` of
/// shape `[outer, first, second, inner]`; `dst` is `[outer, second, first, inner]`.
pub fn swap_middle_axes(src: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [outer, first, second, inner] = shape;
    let len = outer * first * second * inner;
    assert!(
        src.len() == len && inner > 0,
        "swap_middle_axes: {} elements for {shape:?}",
        src.len()
    );
    let rows = (TASK_ELEMENTS / inner).max(1);
    let mut dst = Output::new(len);
    dst.slots()
        .par_chunks_mut(rows * inner)
        .enumerate()
        .for_each(|(task, dst)| {
            for (i, row) in dst.chunks_exact_mut(inner).enumerate() {
                let r = task * rows + i;
                let (a, c, b) = (r / (second * first), r / first % second, r % first);
                let from = ((a * first + b) * second + c) * inner;
                for (slot, &value) in row.iter_mut().zip(&src[from..from + inner]) {
                    slot.write(value);
                }
            }
        });
    // SAFETY: the chunks cover `dst` in whole rows, and each row is copied in full.
    unsafe { dst.written() }
}

/// The elements of a strided view of `src`, in row-major order: `shape`,
/// `strides` (in elements) and `offset` as a tensor layout gives them.
/// Rows are copied in parallel; Flex's own copy walks element by element
/// on one thread (a transposed gradient per attention layer).
pub fn gather_strided(src: &[f32], shape: &[usize], strides: &[usize], offset: usize) -> Vec<f32> {
    assert_eq!(
        shape.len(),
        strides.len(),
        "gather_strided: {shape:?} with strides {strides:?}"
    );
    let len: usize = shape.iter().product();
    let mut out = crate::zeros(len);
    if len == 0 {
        return out;
    }
    let last = shape
        .iter()
        .zip(strides)
        .map(|(n, s)| (n - 1) * s)
        .sum::<usize>()
        + offset;
    assert!(
        last < src.len(),
        "gather_strided: the view reaches {last} of {} elements",
        src.len()
    );
    let (inner, inner_stride) = match (shape.last(), strides.last()) {
        (Some(&n), Some(&s)) => (n, s),
        _ => {
            out[0] = src[offset];
            return out;
        }
    };
    let outer = &shape[..shape.len() - 1];
    let rows = (crate::TASK_ELEMENTS / inner.max(1)).max(1);
    out.par_chunks_mut(rows * inner)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, row) in out.chunks_exact_mut(inner).enumerate() {
                // The row's start: its outer index, digit by digit from the last axis.
                let mut index = task * rows + i;
                let mut start = offset;
                for (&n, &stride) in outer.iter().zip(strides).rev() {
                    start += index % n * stride;
                    index /= n;
                }
                for (j, value) in row.iter_mut().enumerate() {
                    *value = src[start + j * inner_stride];
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_each_row_and_is_undone_by_the_swapped_shape() {
        let shape = [2, 3, 4, 5];
        let src: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let dst = swap_middle_axes(&src, shape);
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    for d in 0..5 {
                        let from = ((a * 3 + b) * 4 + c) * 5 + d;
                        let to = ((a * 4 + c) * 3 + b) * 5 + d;
                        assert_eq!(dst[to], src[from]);
                    }
                }
            }
        }
        let back = swap_middle_axes(&dst, [2, 4, 3, 5]);
        assert_eq!(back, src);
    }

    #[test]
    fn gathers_a_transposed_offset_view() {
        // A [2, 3] view, transposed, of the 2×3 block at offset 1 of a [3, 4] buffer.
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let got = gather_strided(&src, &[3, 2], &[1, 4], 1);
        assert_eq!(got, [1.0, 5.0, 2.0, 6.0, 3.0, 7.0]);
        let big: Vec<f32> = (0..2 * 3 * 70).map(|i| i as f32).collect();
        // [2, 70, 3] as a permuted view of [2, 3, 70]: element (a, b, c) = a·210 + c·70 + b.
        let got = gather_strided(&big, &[2, 70, 3], &[210, 1, 70], 0);
        for (i, value) in got.iter().enumerate() {
            let (a, b, c) = (i / 210, i / 3 % 70, i % 3);
            assert_eq!(*value, (a * 210 + c * 70 + b) as f32);
        }
    }
}
