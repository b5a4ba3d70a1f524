//! The model's products through the `gemm` crate that burn's CPU backend
//! also uses: the linear layer's `y = x·Wᵀ` and its backward, and
//! attention's batched `q·kᵀ` and `p·v` and theirs.
//!
//! Why not burn's matmul: Flex allocates each product's output as a zeroed
//! byte buffer that it then copies once more to align it (about 6% of the
//! CPU bench's samples, on one thread), and autodiff hands back the weight's
//! gradient as a transposed view of `Wᵀ`'s, which the gradient clipping and
//! AdamW then walk element by element. Here outputs are zeroed on every core, gemm writes them once, and
//! `dW` comes out in the weight's own `[out, in]` layout.

use gemm::{Parallelism, gemm};
use rayon::prelude::*;

/// A matrix view of a slice: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Every element the strides reach lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// Products below this many multiply-adds run on the calling thread (as Flex decides).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `lhs · rhs`, row-major `[lhs.rows, rhs.cols]`.
fn product(lhs: Matrix, rhs: Matrix) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let parallelism = if m * n * k >= PARALLEL_WORK {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let mut out = crate::zeros(m * n);
    product_into(lhs, rhs, &mut out, parallelism);
    out
}

/// Writes `lhs · rhs` into `out`, row-major `[lhs.rows, rhs.cols]`.
fn product_into(lhs: Matrix, rhs: Matrix, out: &mut [f32], parallelism: Parallelism) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(
        rhs.rows, k,
        "matmul: inner dimensions {k} and {} differ",
        rhs.rows
    );
    assert_eq!(
        out.len(),
        m * n,
        "matmul: output of {} for [{m}, {n}]",
        out.len()
    );
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "matmul: a view reaches past its slice"
    );
    if m * n * k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: the shapes match (asserted), every element the strides of
    // `lhs` and `rhs` reach is inside its slice (asserted), and `out` holds
    // exactly the `m × n` row-major elements written. With `read_dst`
    // false, gemm writes `out = 1·lhs·rhs` without reading it.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `y = x · Wᵀ` for `x` row-major `[rows, inputs]` and `weight` row-major
/// `[outputs, inputs]` (PyTorch's layout); `y` is `[rows, outputs]`.
pub fn linear(x: &[f32], weight: &[f32], rows: usize) -> Vec<f32> {
    let (inputs, outputs) = linear_dims(x, weight, rows);
    let x = Matrix::row_major(x, rows, inputs);
    let weight = Matrix::row_major(weight, outputs, inputs);
    product(x, weight.transposed())
}

/// `(dx, dW)`: `dx = dy · W` and `dW = dyᵀ · x`, each in its operand's layout.
pub fn linear_backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    rows: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (inputs, outputs) = linear_dims(x, weight, rows);
    assert_eq!(
        grad.len(),
        rows * outputs,
        "linear backward: gradient of another shape"
    );
    let grad = Matrix::row_major(grad, rows, outputs);
    let grad_x = product(grad, Matrix::row_major(weight, outputs, inputs));
    let grad_weight = product(grad.transposed(), Matrix::row_major(x, rows, inputs));
    (grad_x, grad_weight)
}

/// One operand of a batched product: `batch` row-major `[rows, cols]`
/// matrices back to back, used as stored or transposed.
#[derive(Clone, Copy, Debug)]
pub struct Batched<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> Batched<'a> {
    fn matrix(&self, index: usize) -> Matrix<'a> {
        let size = self.rows * self.cols;
        let matrix = Matrix::row_major(
            &self.data[index * size..(index + 1) * size],
            self.rows,
            self.cols,
        );
        if self.transposed {
            matrix.transposed()
        } else {
            matrix
        }
    }

    /// Rows and columns as used.
    fn used(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// `lhs[i] · rhs[i]` for each of the `batch` pairs, row-major and back to
/// back. The pairs are spread over rayon's pool, one gemm each on one
/// thread (attention's `[seq, head_dim]` matrices are too small to split).
pub fn batched_matmul(batch: usize, lhs: Batched, rhs: Batched) -> Vec<f32> {
    let ((m, _), (_, n)) = (lhs.used(), rhs.used());
    for operand in [&lhs, &rhs] {
        assert_eq!(
            operand.data.len(),
            batch * operand.rows * operand.cols,
            "batched matmul: {batch} matrices of [{}, {}] in {} elements",
            operand.rows,
            operand.cols,
            operand.data.len()
        );
    }
    let mut out = crate::zeros(batch * m * n);
    if m * n == 0 {
        return out;
    }
    out.par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(index, out)| {
            product_into(lhs.matrix(index), rhs.matrix(index), out, Parallelism::None);
        });
    out
}

/// `(inputs, outputs)` of a linear layer from its operands.
fn linear_dims(x: &[f32], weight: &[f32], rows: usize) -> (usize, usize) {
    assert!(
        rows > 0 && x.len().is_multiple_of(rows),
        "linear: {} inputs in {rows} rows",
        x.len()
    );
    let inputs = x.len() / rows;
    assert!(
        inputs > 0 && weight.len().is_multiple_of(inputs),
        "linear: weight of {} elements for {inputs} inputs",
        weight.len()
    );
    (inputs, weight.len() / inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a · b` by the definition, in f64.
    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| f64::from(a[i / n * k + j]) * f64::from(b[j * n + i % n]))
                    .sum()
            })
            .collect()
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 31 + seed * 17) % 19) as f32 - 9.0) / 8.0)
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1.0),
                "[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn batched_products_match_the_definition() {
        let (batch, m, k, n) = (3, 4, 5, 6);
        let (a, b) = (values(batch * m * k, 4), values(batch * k * n, 5));
        let bt: Vec<f32> = b.chunks(k * n).flat_map(|b| transpose(b, k, n)).collect();
        let plain = |data, rows, cols| Batched {
            data,
            rows,
            cols,
            transposed: false,
        };
        let got = batched_matmul(batch, plain(&a, m, k), plain(&b, k, n));
        let via_transpose = batched_matmul(
            batch,
            plain(&a, m, k),
            Batched {
                data: &bt,
                rows: n,
                cols: k,
                transposed: true,
            },
        );
        for i in 0..batch {
            let want = naive(&a[i * m * k..][..m * k], &b[i * k * n..][..k * n], m, k, n);
            assert_close(&got[i * m * n..][..m * n], &want);
            assert_close(&via_transpose[i * m * n..][..m * n], &want);
        }
    }

    #[test]
    fn forward_and_backward_match_the_definition() {
        // Big enough to take the multi-threaded path too.
        for (rows, inputs, outputs) in [(3, 5, 4), (300, 200, 180)] {
            let (x, w, dy) = (
                values(rows * inputs, 1),
                values(outputs * inputs, 2),
                values(rows * outputs, 3),
            );
            let y = linear(&x, &w, rows);
            assert_close(
                &y,
                &naive(&x, &transpose(&w, outputs, inputs), rows, inputs, outputs),
            );

            let (dx, dw) = linear_backward(&x, &w, &dy, rows);
            assert_close(&dx, &naive(&dy, &w, rows, outputs, inputs));
            assert_close(
                &dw,
                &naive(&transpose(&dy, rows, outputs), &x, outputs, rows, inputs),
            );
        }
    }
}
