//! Rotary position embeddings in the NeoX "half rotation" layout that
//! transformers uses for Gemma: the head dimension is split in two halves
//! `(x1, x2)` and rotated as `(x1·cos − x2·sin, x2·cos + x1·sin)`, with
//! frequency `i` shared by dimensions `i` and `i + head_dim/2`.
//!
//! The cos/sin tables are computed on the host in fp32, like transformers'
//! `GemmaRotaryEmbedding` (which disables autocast for them), then cast to the
//! activation dtype.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

/// Inverse frequencies `theta^(-2i/d)` for one head dimension.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// cos and sin for a batch of positions, shaped `[batch or 1, 1, seq, head_dim]`
/// so they broadcast over heads (and over the batch when all rows share positions).
#[derive(Clone, Debug)]
pub struct RopeTable<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in fp32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent)
            })
            .collect();
        Self { inv_freq }
    }

    /// Tables for rows of positions (each inner vector one row, all the same length).
    pub fn table<B: Backend>(
        &self,
        positions: &[Vec<usize>],
        dtype: DType,
        device: &B::Device,
    ) -> RopeTable<B> {
        let rows = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(rows * seq * half * 2);
        let mut sin = Vec::with_capacity(rows * seq * half * 2);
        for row in positions {
            assert_eq!(row.len(), seq, "every row of positions has the same length");
            for &position in row {
                let angles: Vec<f32> = self.inv_freq.iter().map(|f| f * position as f32).collect();
                // emb = cat(freqs, freqs): both halves use the same angles.
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    sin.extend(angles.iter().map(|a| a.sin()));
                }
            }
        }
        let shape = [rows, 1, seq, 2 * half];
        let make = |values: Vec<f32>| {
            Tensor::<B, 4>::from_data(TensorData::new(values, shape), (device, DType::F32))
                .cast(dtype)
        };
        RopeTable {
            cos: make(cos),
            sin: make(sin),
        }
    }

    /// The same positions `0..seq` for every row.
    pub fn table_for_length<B: Backend>(
        &self,
        seq: usize,
        dtype: DType,
        device: &B::Device,
    ) -> RopeTable<B> {
        self.table(&[(0..seq).collect()], dtype, device)
    }
}

impl<B: Backend> RopeTable<B> {
    /// Rotates `x` of shape `[batch, heads, seq, head_dim]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        x.clone() * self.cos.clone() + rotate_half(x) * self.sin.clone()
    }
}

/// `(x1, x2) -> (-x2, x1)` over the last dimension.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};

    #[test]
    fn rotates_pairs_i_and_i_plus_half() {
        let device = cpu_device();
        // head_dim 4, theta 100: inv_freq = [1, 100^(-1/2)] = [1, 0.1]
        let rope = Rope::new(4, 100.0);
        let table = rope.table::<Cpu>(&[vec![0, 2]], DType::F32, &device);
        let x =
            Tensor::<Cpu, 4>::from_data([[[[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]]], &device);
        let out = table.apply(x).into_data().to_vec::<f32>().unwrap();
        // position 0: identity
        assert_eq!(&out[0..4], &[1.0, 2.0, 3.0, 4.0]);
        // position 2: pair (x0, x2) rotated by 2 rad, pair (x1, x3) by 0.2 rad
        let (c0, s0) = (2.0f32.cos(), 2.0f32.sin());
        let (c1, s1) = (0.2f32.cos(), 0.2f32.sin());
        let expected = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        for (got, want) in out[4..8].iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
