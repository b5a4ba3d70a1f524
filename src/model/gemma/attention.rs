//! Multi-head / grouped-query / multi-query self-attention with rotary
//! embeddings, as transformers' eager `GemmaAttention`: scores scaled by
//! `head_dim^-0.5`, masked positions filled before a softmax taken in fp32.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use super::linear::Linear;
use super::ops::GemmaBackend;
use super::rope::RopeTable;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    #[module(skip)]
    shape: HeadShape,
}

/// Head counts and size; `head_dim` is independent of the hidden size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Which key positions each query may not see: `[batch, 1, seq, seq]`, true = blocked.
#[derive(Clone, Debug)]
pub struct AttentionMask<B: Backend> {
    blocked: Tensor<B, 4, Bool>,
}

impl<A: burn::tensor::backend::AutodiffBackend> AttentionMask<A> {
    /// The same mask on the inner backend.
    pub fn inner(&self) -> AttentionMask<A::InnerBackend> {
        AttentionMask {
            blocked: self.blocked.clone().inner(),
        }
    }
}

impl<B: Backend> AttentionMask<B> {
    /// Causal mask (the keys after each query blocked), plus padded keys
    /// blocked where `padding` (`[batch, seq]` row-major, 1 = token, 0 =
    /// padding) is given. Built on the host from the host's padding mask:
    /// broadcasting a causal and a padding mask and or-ing them was a
    /// strided pass on one thread of the CPU backend, and reading a device
    /// mask back would wait for the device.
    pub fn causal(padding: Option<&[i64]>, batch: usize, seq: usize, device: &B::Device) -> Self {
        if let Some(padding) = padding {
            assert_eq!(
                padding.len(),
                batch * seq,
                "attention mask of {batch} x {seq}"
            );
        }
        let is_padding = |b: usize, k: usize| padding.is_some_and(|p| p[b * seq + k] == 0);
        let mut blocked = Vec::with_capacity(batch * seq * seq);
        for b in 0..batch {
            for query in 0..seq {
                blocked.extend((0..seq).map(|key| key > query || is_padding(b, key)));
            }
        }
        let blocked = TensorData::new(blocked, [batch, 1, seq, seq]);
        Self {
            blocked: Tensor::from_data(blocked, device),
        }
    }

    /// Also blocks attention between the documents of packed rows: a new
    /// document starts wherever the position id is 0 (as flash attention's
    /// varlen path reads `position_ids`). Rows of one document are unchanged.
    pub fn within_documents(self, positions: &[Vec<usize>], device: &B::Device) -> Self {
        let packed = positions
            .iter()
            .any(|row| row.iter().skip(1).any(|&p| p == 0));
        if !packed {
            return self;
        }
        let seq = positions.first().map_or(0, Vec::len);
        let mut across = Vec::with_capacity(positions.len() * seq * seq);
        for row in positions {
            let document: Vec<usize> = row
                .iter()
                .scan(0usize, |count, &p| {
                    *count += usize::from(p == 0);
                    Some(*count)
                })
                .collect();
            for q in &document {
                across.extend(document.iter().map(|k| k != q));
            }
        }
        let shape = [positions.len(), 1, seq, seq];
        let across = Tensor::<B, 4, Bool>::from_data(TensorData::new(across, shape), device);
        Self {
            blocked: self.blocked.bool_or(across),
        }
    }

    /// The same mask repeated for each of `heads` query heads, so that every
    /// layer fills its scores through a mask of their exact shape: a
    /// broadcast mask is copied out in full by each masked fill on the CPU,
    /// forward and backward, in every layer.
    pub fn for_heads(self, heads: usize) -> Self {
        Self {
            blocked: self.blocked.repeat_dim(1, heads),
        }
    }

    /// `new` positions following `past` cached ones (one unpadded row): query
    /// `i` sees keys `0..=past + i`. Shape `[1, 1, new, past + new]`.
    pub fn after(past: usize, new: usize, device: &B::Device) -> Self {
        let blocked = Tensor::<B, 2, Bool>::tril_mask([new, past + new], past as i64, device);
        Self {
            blocked: blocked.unsqueeze::<4>(),
        }
    }
}

impl<B: Backend> Attention<B> {
    pub fn new(
        q_proj: Linear<B>,
        k_proj: Linear<B>,
        v_proj: Linear<B>,
        o_proj: Linear<B>,
        shape: HeadShape,
    ) -> Self {
        Self {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            shape,
        }
    }
}

impl<B: GemmaBackend> Attention<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, rope);
        self.attend(q, k, v, mask)
    }

    /// Generation: attends the new positions' queries to the cached keys and
    /// values plus their own, and appends theirs to `cache`. `rope` holds the
    /// new positions; `mask` is [`AttentionMask::after`] the cached length.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
        cache: &mut Option<KeyValues<B>>,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, rope);
        let (k, v) = match cache.take() {
            Some(past) => (
                Tensor::cat(vec![past.keys, k], 2),
                Tensor::cat(vec![past.values, v], 2),
            ),
            None => (k, v),
        };
        *cache = Some(KeyValues {
            keys: k.clone(),
            values: v.clone(),
        });
        self.attend(q, k, v, mask)
    }

    /// Rotated queries `[batch, heads, seq, head_dim]` and keys, and values
    /// (`[batch, kv_heads, seq, head_dim]`).
    fn project(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, seq, _] = x.dims();
        let HeadShape {
            heads,
            kv_heads,
            head_dim,
        } = self.shape;
        // The rotation also moves the heads to the front (see `rope`).
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, head_dim]);
        let q = rope.apply(split(self.q_proj.forward(x.clone()), heads));
        let k = rope.apply(split(self.k_proj.forward(x.clone()), kv_heads));
        let v = B::swap_middle_axes(split(self.v_proj.forward(x), kv_heads));
        (q, k, v)
    }

    /// Scaled dot-product attention of `q` over `k`/`v`, softmax in fp32
    /// (`ops::attention`), and the output projection.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let HeadShape {
            heads, head_dim, ..
        } = self.shape;
        let [batch, _, queries, _] = q.dims();
        let scale = (head_dim as f64).powf(-0.5);
        let out = B::masked_attention(q, k, v, mask.blocked.clone(), scale);
        self.o_proj
            .forward(B::swap_middle_axes(out).reshape([batch, queries, heads * head_dim]))
    }
}

/// One layer's rotated keys and values of the positions seen so far
/// (`[batch, kv_heads, seq, head_dim]`): generation's KV cache.
#[derive(Clone, Debug)]
pub struct KeyValues<B: Backend> {
    pub keys: Tensor<B, 4>,
    pub values: Tensor<B, 4>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use burn::tensor::DType;

    #[test]
    fn causal_mask_blocks_future_and_padding() {
        let device = cpu_device();
        let mask = AttentionMask::<Cpu>::causal(Some(&[1, 1, 0]), 1, 3, &device);
        let blocked = mask.blocked.into_data().to_vec::<bool>().unwrap();
        #[rustfmt::skip]
        let expected = [
            false, true,  true,
            false, false, true,
            false, false, true, // the padded key is blocked even for the padded query
        ];
        assert_eq!(blocked, expected);
    }

    #[test]
    fn masked_attention_averages_only_visible_values() {
        // One head, head_dim 2, identity projections, zero queries: each position
        // attends uniformly to the keys it may see, so output t = mean(v_0..=v_t).
        let device = cpu_device();
        let eye = || {
            Linear::new(Tensor::<Cpu, 2>::from_data(
                [[1.0, 0.0], [0.0, 1.0]],
                &device,
            ))
        };
        let zero = Linear::new(Tensor::<Cpu, 2>::zeros([2, 2], &device));
        let shape = HeadShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 2,
        };
        let attention = Attention::new(zero, eye(), eye(), eye(), shape);
        let x = Tensor::<Cpu, 3>::from_data([[[2.0, 0.0], [4.0, 2.0], [6.0, 10.0]]], &device);
        let shape = super::super::rope::TableShape {
            batch: 1,
            query_heads: 1,
            kv_heads: 1,
        };
        let rope = super::super::rope::Rope::new(2, 10_000.0).table_for_length::<Cpu>(
            3,
            shape,
            DType::F32,
            &device,
        );
        let mask = AttentionMask::<Cpu>::causal(None, 1, 3, &device);
        let out = attention
            .forward(x, &rope, &mask)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let expected = [2.0, 0.0, 3.0, 1.0, 4.0, 4.0];
        for (got, want) in out.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{out:?}");
        }
    }
}
