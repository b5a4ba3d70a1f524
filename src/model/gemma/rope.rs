//! Rotary position embeddings in the NeoX "half rotation" layout that
//! transformers uses for Gemma: the head dimension is split in two halves
//! `(x1, x2)` and rotated as `(x1·cos − x2·sin, x2·cos + x1·sin)`, with
//! frequency `i` shared by dimensions `i` and `i + head_dim/2`.
//!
//! The cos/sin tables are computed on the host in fp32, like transformers'
//! `GemmaRotaryEmbedding` (which disables autocast for them), then cast to the
//! activation dtype.
//!
//! The rotation is applied to the projections in their natural
//! `[batch, seq, heads, head_dim]` layout and returns them heads-first
//! (`ops::rope`: on the CPU one pass does both), against tables
//! already repeated to the input's exact shape: every product is then
//! between two contiguous tensors of one shape, which CPU backends run as a
//! plain vector loop instead of a strided, broadcasting walk (the walk cost
//! more than the attention matmuls on the CPU bench). The sign of
//! `rotate_half` is folded into the sin table: `rotate_half(x)·sin` is
//! `swap_halves(x)·(−sin₁, sin₂)`, bit for bit the same products.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::ops::GemmaBackend;

/// Inverse frequencies `theta^(-2i/d)` for one head dimension.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// Which projections a table will rotate: the batch and every head count
/// (query heads, key/value heads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableShape {
    pub batch: usize,
    pub query_heads: usize,
    pub kv_heads: usize,
}

/// cos and signed sin for one head count, shaped `[batch, seq, heads, head_dim]`.
#[derive(Clone, Debug)]
struct Factors<B: Backend> {
    heads: usize,
    cos: Tensor<B, 4>,
    signed_sin: Tensor<B, 4>,
}

/// The rotation of one forward pass, for each head count of the model.
#[derive(Clone, Debug)]
pub struct RopeTable<B: Backend> {
    factors: Vec<Factors<B>>,
}

impl<A: burn::tensor::backend::AutodiffBackend> RopeTable<A> {
    /// The same table on the inner backend (constants: no graph to lose).
    pub fn inner(&self) -> RopeTable<A::InnerBackend> {
        let factors = self
            .factors
            .iter()
            .map(|f| Factors {
                heads: f.heads,
                cos: f.cos.clone().inner(),
                signed_sin: f.signed_sin.clone().inner(),
            })
            .collect();
        RopeTable { factors }
    }
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

    /// Tables for rows of positions (each inner vector one row, all the same
    /// length): one row shared by the whole batch, or one row per sequence.
    pub fn table<B: Backend>(
        &self,
        positions: &[Vec<usize>],
        shape: TableShape,
        dtype: DType,
        device: &B::Device,
    ) -> RopeTable<B> {
        let rows = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(rows * seq * half * 2);
        let mut signed_sin = Vec::with_capacity(rows * seq * half * 2);
        for row in positions {
            assert_eq!(row.len(), seq, "every row of positions has the same length");
            for &position in row {
                let angles: Vec<f32> = self.inv_freq.iter().map(|f| f * position as f32).collect();
                // emb = cat(freqs, freqs): both halves use the same angles.
                for sign in [-1.0f32, 1.0] {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    signed_sin.extend(angles.iter().map(|a| sign * a.sin()));
                }
            }
        }
        let dims = [rows, seq, 1, 2 * half];
        let upload = |values: Vec<f32>| {
            let table =
                Tensor::<B, 4>::from_data(TensorData::new(values, dims), (device, DType::F32))
                    .cast(dtype);
            if rows == 1 {
                table.repeat_dim(0, shape.batch)
            } else {
                table
            }
        };
        let (cos, signed_sin) = (upload(cos), upload(signed_sin));
        let mut factors: Vec<Factors<B>> = Vec::new();
        for heads in [shape.query_heads, shape.kv_heads] {
            if factors.iter().all(|f| f.heads != heads) {
                factors.push(Factors {
                    heads,
                    cos: cos.clone().repeat_dim(2, heads),
                    signed_sin: signed_sin.clone().repeat_dim(2, heads),
                });
            }
        }
        RopeTable { factors }
    }

    /// The same positions `0..seq` for every row.
    pub fn table_for_length<B: Backend>(
        &self,
        seq: usize,
        shape: TableShape,
        dtype: DType,
        device: &B::Device,
    ) -> RopeTable<B> {
        self.table(&[(0..seq).collect()], shape, dtype, device)
    }
}

impl<B: GemmaBackend> RopeTable<B> {
    /// Rotates `x` of shape `[batch, seq, heads, head_dim]`, for one of the
    /// head counts the table was made for, and returns it heads-first,
    /// `[batch, heads, seq, head_dim]`, as attention consumes it.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let heads = x.dims()[2];
        let factors = self
            .factors
            .iter()
            .find(|f| f.heads == heads)
            .expect("the rope table is made for every head count of the model");
        B::rope(x, factors.cos.clone(), factors.signed_sin.clone())
    }
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
        let shape = TableShape {
            batch: 1,
            query_heads: 1,
            kv_heads: 1,
        };
        let table = rope.table::<Cpu>(&[vec![0, 2]], shape, DType::F32, &device);
        // [batch 1, seq 2, heads 1, head_dim 4]
        let x = Tensor::<Cpu, 4>::from_data(
            [[[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 4.0]]]],
            &device,
        );
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

    #[test]
    fn one_table_serves_query_and_key_head_counts() {
        let device = cpu_device();
        let rope = Rope::new(4, 100.0);
        let shape = TableShape {
            batch: 2,
            query_heads: 4,
            kv_heads: 1,
        };
        let table = rope.table::<Cpu>(&[vec![0, 1, 2]], shape, DType::F32, &device);
        let rotate = |heads: usize| {
            let x = Tensor::<Cpu, 4>::ones([2, 3, heads, 4], &device);
            let out = table.apply(x).into_data().to_vec::<f32>().unwrap();
            // every row and head of one position is rotated alike; the
            // output is heads-first, so row 2 is batch 0, head 0, position 2
            out.chunks(4).nth(2).unwrap().to_vec()
        };
        // position 2 (row 0, third position) for both head counts
        let (c0, s0) = (2.0f32.cos(), 2.0f32.sin());
        assert!((rotate(4)[0] - (c0 - s0)).abs() < 1e-6);
        assert_eq!(rotate(4), rotate(1));
    }
}
