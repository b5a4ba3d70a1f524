//! Scaled dot-product attention as transformers' eager `GemmaAttention`:
//! `softmax(where(blocked, f32::MIN, scale·q·kᵀ))·v`, the scores scaled in
//! the model's dtype and the softmax taken in fp32. On the CPU one fused
//! pass (`align_kernels::attention`) that skips the keys a tile of queries
//! cannot see (the causal upper triangle), and one for the backward.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::FlexTensor;

use crate::backend::flex::{
    backward_all, contiguous, f32_slice, float, from_float, output, record,
};
use crate::backend::{Composed, Cpu, CpuTrain};

/// Scaled dot-product attention: `q` `[batch, heads, queries, head_dim]`,
/// `k` and `v` `[batch, kv_heads, keys, head_dim]`, `blocked` (true: the
/// query may not see the key) broadcasting to `[batch, heads, queries,
/// keys]`; the output is `[batch, heads, queries, head_dim]`.
pub trait AttentionOp: Backend {
    fn masked_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        blocked: Tensor<Self, 4, Bool>,
        scale: f64,
    ) -> Tensor<Self, 4> {
        composed(q, k, v, blocked, scale)
    }
}

impl<B: Composed> AttentionOp for B {}

impl AttentionOp for Cpu {
    fn masked_attention(
        q: Tensor<Cpu, 4>,
        k: Tensor<Cpu, 4>,
        v: Tensor<Cpu, 4>,
        blocked: Tensor<Cpu, 4, Bool>,
        scale: f64,
    ) -> Tensor<Cpu, 4> {
        if !fusable(&q, &k, &v, &blocked) {
            return composed(q, k, v, blocked, scale);
        }
        let (q, k, v) = (float(q), float(k), float(v));
        let (out, _) = forward(&q, &k, &v, &blocked.into_primitive(), scale as f32);
        from_float(out)
    }
}

impl AttentionOp for CpuTrain {
    fn masked_attention(
        q: Tensor<CpuTrain, 4>,
        k: Tensor<CpuTrain, 4>,
        v: Tensor<CpuTrain, 4>,
        blocked: Tensor<CpuTrain, 4, Bool>,
        scale: f64,
    ) -> Tensor<CpuTrain, 4> {
        if !fusable(&q, &k, &v, &blocked) {
            return composed(q, k, v, blocked, scale);
        }
        let (q, k, v) = (float(q), float(k), float(v));
        let (blocked, scale) = (blocked.into_primitive(), scale as f32);
        let (out, probs) = forward(&q.primitive, &k.primitive, &v.primitive, &blocked, scale);
        let state = || {
            let operands = [&q, &k, &v].map(|t| t.primitive.clone());
            (operands, blocked, probs, scale)
        };
        from_float(record(AttentionBackward, [&q, &k, &v], state, out))
    }
}

/// The composed attention, every backend's but Flex's: the key/value heads
/// repeated for their query heads, the scores masked with `f32::MIN`.
pub fn composed<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    blocked: Tensor<B, 4, Bool>,
    scale: f64,
) -> Tensor<B, 4> {
    let [batch, heads, queries, _] = q.dims();
    let keys = k.dims()[2];
    let (k, v) = (repeat_kv(k, heads), repeat_kv(v, heads));
    let blocked = blocked.expand([batch, heads, queries, keys]);
    let dtype = q.dtype();
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let probs = if dtype == DType::F32 {
        softmax(scores.mask_fill(blocked, f32::MIN), 3)
    } else {
        softmax(scores.cast(DType::F32).mask_fill(blocked, f32::MIN), 3).cast(dtype)
    };
    probs.matmul(v)
}

/// Shares each key/value head among `heads / kv_heads` query heads.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [batch, kv_heads, seq, head_dim] = x.dims();
    if kv_heads == heads {
        return x;
    }
    let groups = heads / kv_heads;
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, heads, seq, head_dim])
}

/// `softmax(x)` along `dim`, shifted by the (detached) maximum, composed
/// from elementary ops rather than taken from burn.
///
/// Why: the policy runs on the autodiff backend and the frozen reference on
/// the inner backend. burn-autodiff computes softmax by composing
/// elementary ops while the Flex CPU backend uses a fused kernel, so the two
/// differ in the last bit. TRL's policy and reference run the same kernels:
/// at step 1 (policy = reference) its rewards are exactly 0 and
/// `rewards/accuracies` (a strict `>`) exactly 0. Composing the ops here
/// makes both backends compute the same bits (`train::token_logps` does the
/// same for the log-softmax).
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let exp = (x - max).exp();
    let sum = exp.clone().sum_dim(dim);
    exp / sum
}

/// Whether the fused kernel takes these operands: fp32, shapes that agree,
/// whole groups of query heads per key/value head, none empty.
fn fusable<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    blocked: &Tensor<B, 4, Bool>,
) -> bool {
    let (dq, dk, dm) = (q.dims(), k.dims(), blocked.dims());
    [q.dtype(), k.dtype(), v.dtype()] == [DType::F32; 3]
        && dk == v.dims()
        && dq[0] == dk[0]
        && dq[3] == dk[3]
        && dk[1] > 0
        && dq[1].is_multiple_of(dk[1])
        && [1, dq[0]].contains(&dm[0])
        && [1, dq[1]].contains(&dm[1])
        && dm[2..] == [dq[2], dk[2]]
        && dq.iter().chain(&dk).all(|&n| n > 0)
}

/// A bool tensor's bytes (Flex stores one byte, 0 or 1, per element).
fn mask_bytes(blocked: &FlexTensor) -> &[u8] {
    &blocked.bytes()[..blocked.layout().num_elements()]
}

/// The sizes of an attention call from its operands.
fn shape(q: &FlexTensor, k: &FlexTensor, blocked: &FlexTensor) -> align_kernels::AttentionShape {
    let (q, k, mask) = (
        q.layout().shape(),
        k.layout().shape(),
        blocked.layout().shape(),
    );
    align_kernels::AttentionShape {
        batch: q[0],
        heads: q[1],
        kv_heads: k[1],
        queries: q[2],
        keys: k[2],
        head_dim: q[3],
        mask_batch: mask[0],
        mask_heads: mask[1],
    }
}

/// The fused forward on Flex: the output `[batch, heads, queries,
/// head_dim]` and the probabilities `[batch, heads, queries, keys]`.
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    blocked: &FlexTensor,
    scale: f32,
) -> (FlexTensor, FlexTensor) {
    let (q, k, v, blocked) = (
        contiguous(q),
        contiguous(k),
        contiguous(v),
        blocked.to_contiguous(),
    );
    let shape = shape(&q, &k, &blocked);
    let (out, probs) = align_kernels::attention(
        f32_slice(&q),
        f32_slice(&k),
        f32_slice(&v),
        mask_bytes(&blocked),
        shape,
        scale,
    );
    let probs_shape = vec![shape.batch, shape.heads, shape.queries, shape.keys];
    (
        output(out, &q),
        FlexTensor::from_data(burn::tensor::TensorData::new(probs, probs_shape)),
    )
}

/// The fused backward: keeps the operands, the mask and the probabilities.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Cpu, 3> for AttentionBackward {
    /// q, k, v, mask, probabilities, scale.
    type State = ([FlexTensor; 3], FlexTensor, FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |([q, k, v], blocked, probs, scale), grad| {
            let (q, k, v, blocked, grad) = (
                contiguous(&q),
                contiguous(&k),
                contiguous(&v),
                blocked.to_contiguous(),
                contiguous(&grad),
            );
            let (dq, dk, dv) = align_kernels::attention_backward(
                f32_slice(&q),
                f32_slice(&k),
                f32_slice(&v),
                mask_bytes(&blocked),
                f32_slice(&probs),
                f32_slice(&grad),
                shape(&q, &k, &blocked),
                scale,
            );
            [output(dq, &q), output(dk, &k), output(dv, &v)]
        });
    }
}
