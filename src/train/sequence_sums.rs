//! Each scored token's log-probability added into its sequence's sum: the
//! number DPO's rewards and SFT's loss are made of, promised in fp32 (also
//! under `bf16: true`). A backend extension trait, as the model's ops are
//! (`model::gemma::ops`).
//!
//! One product against a 0/1 membership matrix does it, and does on burn's
//! CPU backend, whose gemm multiplies in f32. A GPU backend may run an f32
//! matmul on tensor cores as TF32 (11 significant bits: ~2e-3 absolute per
//! token at |logp| ≈ 5, more per sequence), so every other backend gathers
//! the tokens into a padded `[rows, longest]` layout, the padding reading a
//! zero, and reduces it with `sum_dim`: an f32 sum.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::backend::{Composed, Cpu, CpuTrain};

/// `values[i]` (fp32, `[tokens]`) added into row `owners[i]` of `[rows]`,
/// differentiable.
pub trait SequenceSumOp: Backend {
    fn sum_per_row(values: Tensor<Self, 1>, owners: &[usize], rows: usize) -> Tensor<Self, 1> {
        padded_sum(values, owners, rows)
    }
}

impl<B: Composed> SequenceSumOp for B {}

impl SequenceSumOp for Cpu {
    fn sum_per_row(values: Tensor<Cpu, 1>, owners: &[usize], rows: usize) -> Tensor<Cpu, 1> {
        membership_product(values, owners, rows)
    }
}

impl SequenceSumOp for CpuTrain {
    fn sum_per_row(
        values: Tensor<CpuTrain, 1>,
        owners: &[usize],
        rows: usize,
    ) -> Tensor<CpuTrain, 1> {
        membership_product(values, owners, rows)
    }
}

/// The gather into `[rows, longest]` and an f32 `sum_dim`: exact to f32
/// rounding on any backend.
pub fn padded_sum<B: Backend>(values: Tensor<B, 1>, owners: &[usize], rows: usize) -> Tensor<B, 1> {
    let device = values.device();
    let tokens = owners.len();
    let mut counts = vec![0usize; rows];
    for &row in owners {
        counts[row] += 1;
    }
    let longest = counts.iter().copied().max().unwrap_or(0).max(1);
    // Index `tokens` is the zero appended below: what the padding reads.
    let mut index = vec![tokens as i64; rows * longest];
    let mut filled = vec![0usize; rows];
    for (token, &row) in owners.iter().enumerate() {
        index[row * longest + filled[row]] = token as i64;
        filled[row] += 1;
    }
    let zero = Tensor::<B, 1>::from_data(TensorData::new(vec![0f32], [1]), (&device, DType::F32));
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows * longest]), &device);
    Tensor::cat(vec![values, zero], 0)
        .select(0, index)
        .reshape([rows, longest])
        .sum_dim(1)
        .reshape([rows])
}

/// `[rows, tokens]` 0/1 membership times `[tokens]`: one matmul.
fn membership_product<B: Backend>(
    values: Tensor<B, 1>,
    owners: &[usize],
    rows: usize,
) -> Tensor<B, 1> {
    let tokens = owners.len();
    let mut membership = vec![0f32; rows * tokens];
    for (token, &row) in owners.iter().enumerate() {
        membership[row * tokens + token] = 1.0;
    }
    let membership = Tensor::<B, 2>::from_data(
        TensorData::new(membership, [rows, tokens]),
        (&values.device(), DType::F32),
    );
    membership
        .matmul(values.reshape([tokens, 1]))
        .reshape([rows])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::testing::floats;

    /// 4 rows of 150, 37, 0 and 213 tokens, in mixed order, with values
    /// around a log-prob's -5 in steps of 2⁻¹⁰: 13 significant bits, and
    /// every partial sum (|sum| < 2¹³) fits f32's 24, so any order of f32
    /// additions gives the exact sum, and a TF32 product (11 bits) cannot.
    fn case() -> (Vec<f32>, Vec<usize>, usize) {
        let rows = 4;
        let mut owners: Vec<usize> = [(0, 150), (1, 37), (3, 213)]
            .iter()
            .flat_map(|&(row, n)| std::iter::repeat_n(row, n))
            .collect();
        owners.sort_by_key(|&row| (row * 7919) % 5);
        let values = (0..owners.len())
            .map(|i| -5.0 - ((i * 104_729) % 1000) as f32 / 1024.0)
            .collect();
        (values, owners, rows)
    }

    /// Each row's sum in f64.
    fn exact_sums(values: &[f32], owners: &[usize], rows: usize) -> Vec<f64> {
        let mut sums = vec![0f64; rows];
        for (&row, &value) in owners.iter().zip(values) {
            sums[row] += f64::from(value);
        }
        sums
    }

    fn as_f64(values: &[f32]) -> Vec<f64> {
        values.iter().map(|&v| f64::from(v)).collect()
    }

    #[test]
    fn the_composed_sums_are_exact_to_f32_rounding() {
        let (values, owners, rows) = case();
        let device = Default::default();
        let tensor =
            Tensor::<Cpu, 1>::from_data(TensorData::new(values.clone(), [values.len()]), &device);
        let got = floats(padded_sum(tensor, &owners, rows));
        let exact = exact_sums(&values, &owners, rows);
        assert_eq!(as_f64(&got), exact);
        assert_eq!(got[2], 0.0, "a row without tokens sums to zero");

        // The same tokens rounded to TF32 (10 stored mantissa bits, to
        // nearest) miss: the test would catch a TF32 product.
        let tf32 = |v: f32| f32::from_bits((v.to_bits() + (1 << 12)) & !((1 << 13) - 1));
        let rounded: Vec<f32> = values.iter().map(|&v| tf32(v)).collect();
        assert_ne!(exact_sums(&rounded, &owners, rows), exact);
    }

    #[test]
    fn the_composed_sums_pass_each_rows_gradient_to_its_tokens() {
        let (values, owners, rows) = case();
        let device = Default::default();
        let tensor = Tensor::<CpuTrain, 1>::from_data(
            TensorData::new(values.clone(), [values.len()]),
            &device,
        )
        .require_grad();
        let weights = Tensor::<CpuTrain, 1>::from_data(
            TensorData::new(vec![0.5f32, -2.0, 3.0, 1.25], [rows]),
            &device,
        );
        let grads = (padded_sum(tensor.clone(), &owners, rows) * weights)
            .sum()
            .backward();
        let got = floats(tensor.grad(&grads).unwrap());
        let want: Vec<f32> = owners
            .iter()
            .map(|&row| [0.5, -2.0, 3.0, 1.25][row])
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_cpu_product_is_exact_to_f32_rounding_too() {
        let (values, owners, rows) = case();
        let device = Default::default();
        let tensor =
            Tensor::<Cpu, 1>::from_data(TensorData::new(values.clone(), [values.len()]), &device);
        let got = floats(Cpu::sum_per_row(tensor, &owners, rows));
        assert_eq!(as_f64(&got), exact_sums(&values, &owners, rows));
    }
}
