//! Elementwise functions of the model written here rather than taken from
//! burn: softmax and log-softmax (bit-equal on both backends), Gemma's
//! RMSNorm, the rotary embedding, the tanh GELU (fewer, cheaper ops), the
//! linear product and scaled dot-product attention. On the CPU backend `model::fused` runs all but the
//! log-softmax as fused kernels
//! instead; these are the other backends' path.
//!
//! Softmax and log-softmax are composed from elementary ops, not burn's
//! fused kernels.
//!
//! Why: the policy runs on the autodiff backend and the frozen reference on
//! the inner backend. burn-autodiff computes (log-)softmax by composing
//! elementary ops while the Flex CPU backend uses a fused kernel, so the two
//! differ in the last bit. TRL's policy and reference run the same kernels:
//! at step 1 (policy = reference) its rewards are exactly 0 and
//! `rewards/accuracies` (a strict `>`) exactly 0. Composing the ops here
//! makes both backends compute the same bits.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};

/// `log(softmax(x))` along `dim`, shifted by the (detached) maximum.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let log_sum_exp = shifted.clone().exp().sum_dim(dim).log();
    shifted - log_sum_exp
}

/// `softmax(x)` along `dim`, shifted by the (detached) maximum.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let exp = (x - max).exp();
    let sum = exp.clone().sum_dim(dim);
    exp / sum
}

/// Scaled dot-product attention as transformers' eager `GemmaAttention`:
/// `softmax(where(blocked, f32::MIN, scale·q·kᵀ))·v`, the scores scaled in
/// the model's dtype and the softmax taken in fp32. `q` is `[batch, heads,
/// queries, head_dim]`, `k` and `v` `[batch, kv_heads, keys, head_dim]`,
/// `blocked` broadcasts to `[batch, heads, queries, keys]`.
pub fn attention<B: Backend>(
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

/// Gemma's RMSNorm over the last axis: `x · r · (1 + weight)` with
/// `r = 1 / sqrt(mean(x²) + eps)` per row.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    let normed = x * (mean_square + eps).sqrt().recip();
    normed * (weight + 1.0).unsqueeze::<D>()
}

/// `x · Wᵀ` over the last axis of `x`, `weight` in PyTorch's `[out, in]`.
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let mut out_shape = x.dims();
    let features = out_shape[D - 1];
    out_shape[D - 1] = weight.dims()[0];
    let rows = x.shape().num_elements() / features;
    x.reshape([rows, features])
        .matmul(weight.transpose())
        .reshape(out_shape)
}

/// Rotary embedding against tables of `x`'s shape:
/// `x ⊙ cos + swap_halves(x) ⊙ signed_sin` (see `gemma::rope`).
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    signed_sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    x.clone() * cos + swap_halves(x) * signed_sin
}

/// `(x1, x2) -> (x2, x1)` over the last dimension.
fn swap_halves<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2, x1], 3)
}

/// `gelu_pytorch_tanh`: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`,
/// computed as the equal `x·σ(2·√(2/π)·x·(1 + 0.044715·x²))`.
///
/// Why not burn's `gelu_approximate`: it raises `x` to the power 3 with
/// `powf` and calls `tanh`, both scalar libm calls per element on the CPU,
/// and with the autodiff bookkeeping of eight ops it was the costliest part
/// of the MLP after its matmuls. This form is six ops, one of them a sigmoid
/// (a fused kernel with a fused backward on every backend); the values agree
/// with torch's kernel to float rounding.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    /// `2·√(2/π)`.
    const TWICE_SQRT_2_OVER_PI: f64 =
        2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
    const CUBIC: f64 = 0.044715;
    let square = x.clone() * x.clone();
    let slope = square * (TWICE_SQRT_2_OVER_PI * CUBIC) + TWICE_SQRT_2_OVER_PI;
    burn::tensor::activation::sigmoid(slope * x.clone()) * x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let device = cpu_device();
        let inputs = [
            -6.0f32, -3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 6.0,
        ];
        let x = Tensor::<Cpu, 1>::from_floats(inputs, &device);
        let got = gelu_tanh(x).into_data().to_vec::<f32>().unwrap();
        for (value, got) in inputs.iter().zip(got) {
            let v = f64::from(*value);
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            let want = 0.5 * v * (1.0 + inner.tanh());
            assert!(
                (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "gelu_tanh({value}) = {got}, want {want}"
            );
        }
    }
}
