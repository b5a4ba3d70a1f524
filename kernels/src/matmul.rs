//! The model's products through the `gemm` crate that burn's CPU backend
//! also uses: the linear layer's `y = x·Wᵀ` and its backward, and the
//! blocks of attention's products (`attention`).
//!
//! Why not burn's matmul: Flex allocates each product's output as a zeroed
//! byte buffer that it then copies once more to align it (about 6% of the
//! CPU bench's samples, on one thread), and autodiff hands back the weight's
//! gradient as a transposed view of `Wᵀ`'s, which the gradient clipping and
//! AdamW then walk element by element. Here gemm writes each output once,
//! into memory not zeroed first, and `dW` comes out in the weight's own
//! `[out, in]` layout.

use std::mem::MaybeUninit;

use gemm::{Parallelism, gemm};

use crate::{Output, use_avx2_fma};

/// A matrix view of a slice: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::rows_apart(data, rows, cols, cols)
    }

    /// `rows × cols` with rows `row_stride` apart (a block of a wider matrix).
    pub(crate) fn rows_apart(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    pub(crate) fn transposed(self) -> Self {
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

/// Where a product goes: `out`'s rows `row_stride` apart, each as long as
/// the product's; overwritten or, with `accumulate`, added to.
pub(crate) struct Destination<'a> {
    pub out: &'a mut [MaybeUninit<f32>],
    pub row_stride: usize,
    pub accumulate: bool,
}

/// Products below this many multiply-adds run on the calling thread (as Flex decides).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `lhs · rhs`, row-major `[lhs.rows, rhs.cols]`. The output is not zeroed
/// first: gemm overwrites it (zeroing each output was 5% of the CPU bench's
/// samples, memory bandwidth spent for nothing).
fn product(lhs: Matrix, rhs: Matrix) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let parallelism = if m * n * k >= PARALLEL_WORK {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let mut out = Output::new(m * n);
    let destination = Destination {
        out: out.slots(),
        row_stride: n,
        accumulate: false,
    };
    product_into(lhs, rhs, destination, parallelism);
    // SAFETY: `product_into` initialised every element of its overwriting
    // destination of exactly `m · n`, rows `n` apart.
    unsafe { out.written() }
}

/// Writes (or adds) `lhs · rhs` into `destination`. An overwriting
/// destination has every element of its rows initialised afterwards.
pub(crate) fn product_into(
    lhs: Matrix,
    rhs: Matrix,
    destination: Destination,
    parallelism: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let Destination {
        out,
        row_stride,
        accumulate,
    } = destination;
    assert_eq!(
        rhs.rows, k,
        "matmul: inner dimensions {k} and {} differ",
        rhs.rows
    );
    assert!(
        m == 0 || n == 0 || ((m - 1) * row_stride + n <= out.len() && n <= row_stride),
        "matmul: output of {} for [{m}, {n}] rows {row_stride} apart",
        out.len()
    );
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "matmul: a view reaches past its slice"
    );
    if m * n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in out.chunks_mut(row_stride).take(m) {
                row[..n].fill(MaybeUninit::new(0.0));
            }
        }
        return;
    }
    // gemm works column-major: asked for `outᵀ = rhsᵀ · lhsᵀ`, it reads
    // our row-major operands and writes our row-major output in its own
    // layout, and packs nothing on the calling thread (given `lhs · rhs`, it
    // packed `lhs` there first, while the other cores waited).
    let (first, second) = (rhs.transposed(), lhs.transposed());
    // SAFETY: the shapes match and every element the strides of `lhs`,
    // `rhs` and the destination reach is inside its slice (asserted). gemm
    // writes `out = 1·lhs·rhs` without reading it, or with `accumulate`
    // (`read_dst`) `out = 1·out + 1·lhs·rhs`, whose caller has initialised it.
    unsafe {
        let product = if use_avx2_fma() {
            gemm::<f32>
        } else {
            gemm_baseline
        };
        product(
            n,
            m,
            k,
            out.as_mut_ptr().cast::<f32>(),
            row_stride as isize,
            1,
            accumulate,
            first.data.as_ptr(),
            first.col_stride as isize,
            first.row_stride as isize,
            second.data.as_ptr(),
            second.col_stride as isize,
            second.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `gemm::gemm` for `f32` on its scalar path, the one it takes on an
/// x86-64 CPU without FMA: `ALIGN_CPU_KERNELS=baseline`. gemm chooses its
/// path once per process from the CPU alone (its `get_gemm_fn`), so this
/// calls what that path calls: gemm-common's driver with gemm-f32's scalar
/// microkernels, after the same change to a column-major destination that
/// `gemm::gemm` makes (strides here are never negative).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_baseline(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    conj_dst: bool,
    conj_lhs: bool,
    conj_rhs: bool,
    parallelism: Parallelism,
) {
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::Scalar;
    use gemm_f32::microkernel::scalar::f32 as ukr;

    let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, conj_lhs, conj_rhs) =
        if dst_cs.abs() < dst_rs.abs() {
            (
                n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs, conj_rhs, conj_lhs,
            )
        } else {
            (
                m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, conj_lhs, conj_rhs,
            )
        };
    // SAFETY: the caller's contract is `gemm::gemm`'s; the generic
    // arguments are those of gemm-f32's own scalar `gemm_basic` (N = 1).
    unsafe {
        gemm_basic_generic::<
            Scalar,
            f32,
            1,
            { ukr::MR_DIV_N },
            { ukr::NR },
            { ukr::MR_DIV_N },
            { ukr::H_M },
            { ukr::H_N },
        >(
            Scalar,
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            conj_dst,
            conj_lhs,
            conj_rhs,
            |a, b, c| a * b + c,
            &ukr::UKR,
            &ukr::H_UKR,
            false,
            parallelism,
        )
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

    /// `a · b` as one left-to-right chain per element in f32, each step
    /// `acc + x·y` rounded twice (`fused = false`) or once (`mul_add`).
    fn chained(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, fused: bool) -> Vec<f32> {
        (0..m * n)
            .map(|i| {
                (0..k).fold(0.0f32, |acc, j| {
                    let (x, y) = (a[i / n * k + j], b[j * n + i % n]);
                    if fused {
                        x.mul_add(y, acc)
                    } else {
                        x * y + acc
                    }
                })
            })
            .collect()
    }

    /// `lhs · rhs` through gemm's baseline path (`ALIGN_CPU_KERNELS=baseline`)
    /// or through `gemm::gemm` as the CPU has it, called as `product_into` does.
    fn through(baseline: bool, lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        let call = if baseline { gemm_baseline } else { gemm::<f32> };
        let parallelism = if m * n * k >= PARALLEL_WORK {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        };
        // SAFETY: row-major [m, k] · [k, n] into row-major [m, n], asked as
        // `outᵀ = rhsᵀ · lhsᵀ` with the strides of `product_into`.
        unsafe {
            call(
                n,
                m,
                k,
                out.as_mut_ptr(),
                n as isize,
                1,
                false,
                rhs.as_ptr(),
                n as isize,
                1,
                lhs.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        out
    }

    #[test]
    fn the_baseline_path_rounds_every_multiply_and_add() {
        // Operands whose products are not exact in f32: fused and unfused
        // chains then differ, and each path must give one of them bit for bit
        // (k ≤ 512: gemm sums the whole depth in one block, in order).
        for (m, k, n) in [(5, 7, 3), (64, 300, 48), (300, 200, 180)] {
            let noisy = |len: usize, seed: u32| -> Vec<f32> {
                (0..len as u32)
                    .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 10007) as f32 / 997.0 - 5.0)
                    .collect()
            };
            let (a, b) = (noisy(m * k, 1), noisy(k * n, 2));
            let unfused = chained(&a, &b, m, k, n, false);
            assert_eq!(
                through(true, &a, &b, m, k, n),
                unfused,
                "[{m}, {k}] · [{k}, {n}]"
            );
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("fma") {
                let fma = through(false, &a, &b, m, k, n);
                assert_eq!(
                    fma,
                    chained(&a, &b, m, k, n, true),
                    "[{m}, {k}] · [{k}, {n}]"
                );
                assert_ne!(fma, unfused);
            }
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
