//! The model's hot spots as fused kernels where the backend is burn's CPU
//! one: attention (products, scale, mask, softmax), the MLP's gated tanh
//! GELU, the RMSNorm, the rotary embedding, the linear layers' products,
//! attention's head transposes and the token log-probs, each one
//! multi-threaded pass forward and one backward, and the optimizer's AdamW
//! update (`align_kernels`). Other
//! backends compose the same math from burn ops (`model::ops`).
//!
//! Why: on Flex each link of the element-wise chains is a single-threaded
//! scalar pass with its own autodiff node (broadcasting ones walk strided),
//! and Flex's products zero and then copy their outputs on one thread;
//! together that took about a third of the CPU bench's samples while one of
//! the two cores sat idle. With these the CPU step is on par with PyTorch +
//! TRL (`docs/benchmarks.md`, "CPU: where align stands against PyTorch + TRL").
//!
//! Policy and reference stay bit-identical, as TRL's do: the autodiff
//! backend's forward here is the inner backend's (`flex`), so the policy
//! (`Autodiff<Flex>`) and the frozen reference (`Flex`) run the same kernel.
//!
//! The backend is told apart at run time (`TypeId`), not by a trait bound:
//! the model stays generic over `B: Backend`, and only this module knows
//! that a faster path exists.

mod autodiff;
mod flex;

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorPrimitive};

use crate::backend::{Cpu, CpuTrain};
use crate::model::ops;

/// Which implementation a backend gets.
enum Route {
    /// Flex itself: the fused forward.
    Flex,
    /// Flex under autodiff: the fused forward and backward.
    FlexAutodiff,
    /// Anything else: burn ops.
    Composed,
}

fn route<B: Backend>(fusable: bool) -> Route {
    let backend = TypeId::of::<B>();
    if !fusable {
        Route::Composed
    } else if backend == TypeId::of::<Cpu>() {
        Route::Flex
    } else if backend == TypeId::of::<CpuTrain>() {
        Route::FlexAutodiff
    } else {
        Route::Composed
    }
}

/// Scaled dot-product attention, `softmax(where(blocked, f32::MIN,
/// scale·q·kᵀ))·v` (`ops::attention`): `q` `[batch, heads, queries,
/// head_dim]`, `k` and `v` `[batch, kv_heads, keys, head_dim]`, `blocked`
/// `[batch or 1, heads or 1, queries, keys]`; the output is `[batch,
/// heads, queries, head_dim]`. On Flex in one pass that skips the keys a
/// tile of queries cannot see (the causal upper triangle).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    blocked: Tensor<B, 4, Bool>,
    scale: f64,
) -> Tensor<B, 4> {
    let (dq, dk, dm) = (q.dims(), k.dims(), blocked.dims());
    let fusable = [q.dtype(), k.dtype(), v.dtype()] == [DType::F32; 3]
        && dk == v.dims()
        && dq[0] == dk[0]
        && dq[3] == dk[3]
        && dk[1] > 0
        && dq[1].is_multiple_of(dk[1])
        && [1, dq[0]].contains(&dm[0])
        && [1, dq[1]].contains(&dm[1])
        && dm[2..] == [dq[2], dk[2]]
        && dq.iter().chain(&dk).all(|&n| n > 0);
    let scale32 = scale as f32;
    match route::<B>(fusable) {
        Route::Flex => {
            let (q, k, v, blocked) = retype::<
                _,
                (
                    Tensor<Cpu, 4>,
                    Tensor<Cpu, 4>,
                    Tensor<Cpu, 4>,
                    Tensor<Cpu, 4, Bool>,
                ),
            >((q, k, v, blocked));
            let (out, _) = flex::attention(
                &float(q),
                &float(k),
                &float(v),
                &blocked.into_primitive(),
                scale32,
            );
            retype(from_float::<Cpu, 4>(out))
        }
        Route::FlexAutodiff => {
            let (q, k, v, blocked) = retype::<
                _,
                (
                    Tensor<CpuTrain, 4>,
                    Tensor<CpuTrain, 4>,
                    Tensor<CpuTrain, 4>,
                    Tensor<CpuTrain, 4, Bool>,
                ),
            >((q, k, v, blocked));
            let out = autodiff::attention(
                [float(q), float(k), float(v)],
                blocked.into_primitive(),
                scale32,
            );
            retype(from_float::<CpuTrain, 4>(out))
        }
        Route::Composed => ops::attention(q, k, v, blocked, scale),
    }
}

/// `gelu_tanh(gate) ⊙ up` (Gemma's `gelu_pytorch_tanh` GeGLU).
pub fn gelu_tanh_gated<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    let fusable =
        gate.dtype() == DType::F32 && up.dtype() == DType::F32 && gate.dims() == up.dims();
    match route::<B>(fusable) {
        Route::Flex => {
            let (gate, up) = retype::<_, (Tensor<Cpu, D>, Tensor<Cpu, D>)>((gate, up));
            retype(from_float::<Cpu, D>(flex::gelu_tanh_gated(
                &float(gate),
                &float(up),
            )))
        }
        Route::FlexAutodiff => {
            let (gate, up) = retype::<_, (Tensor<CpuTrain, D>, Tensor<CpuTrain, D>)>((gate, up));
            retype(from_float::<CpuTrain, D>(autodiff::gelu_tanh_gated(
                float(gate),
                float(up),
            )))
        }
        Route::Composed => ops::gelu_tanh(gate) * up,
    }
}

/// Gemma's RMSNorm over the last axis of fp32 `x`: `x · r · (1 + weight)`,
/// `r = 1 / sqrt(mean(x²) + eps)` (`weight` is the offset from 1, as stored).
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let fusable = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.dims()[D - 1] == weight.dims()[0];
    match route::<B>(fusable) {
        Route::Flex => {
            let (x, weight) = retype::<_, (Tensor<Cpu, D>, Tensor<Cpu, 1>)>((x, weight));
            let (out, _) = flex::rms_norm(&float(x), &float(weight), eps as f32);
            retype(from_float::<Cpu, D>(out))
        }
        Route::FlexAutodiff => {
            let (x, weight) = retype::<_, (Tensor<CpuTrain, D>, Tensor<CpuTrain, 1>)>((x, weight));
            retype(from_float::<CpuTrain, D>(autodiff::rms_norm(
                float(x),
                float(weight),
                eps as f32,
            )))
        }
        Route::Composed => ops::rms_norm(x, weight, eps),
    }
}

/// The rotary embedding of `x` (`[batch, seq, heads, head_dim]`) against
/// constant tables of its shape, `x ⊙ cos + swap_halves(x) ⊙ signed_sin`,
/// returned heads-first: `[batch, heads, seq, head_dim]`.
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    signed_sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let fusable = [x.dtype(), cos.dtype(), signed_sin.dtype()] == [DType::F32; 3]
        && x.dims() == cos.dims()
        && x.dims() == signed_sin.dims()
        && x.dims()[3].is_multiple_of(2);
    match route::<B>(fusable) {
        Route::Flex => {
            let (x, cos, sin) =
                retype::<_, (Tensor<Cpu, 4>, Tensor<Cpu, 4>, Tensor<Cpu, 4>)>((x, cos, signed_sin));
            retype(from_float::<Cpu, 4>(flex::rope(
                &float(x),
                &float(cos),
                &float(sin),
            )))
        }
        Route::FlexAutodiff => {
            let (x, cos, sin) = retype::<
                _,
                (
                    Tensor<CpuTrain, 4>,
                    Tensor<CpuTrain, 4>,
                    Tensor<CpuTrain, 4>,
                ),
            >((x, cos, signed_sin));
            retype(from_float::<CpuTrain, 4>(autodiff::rope(
                float(x),
                float(cos),
                float(sin),
            )))
        }
        Route::Composed => ops::rope(x, cos, signed_sin).swap_dims(1, 2),
    }
}

/// `x · Wᵀ` over the last axis of `x`, `weight` in PyTorch's `[out, in]`.
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let [outputs, inputs] = weight.dims();
    let mut out_shape = x.dims();
    let fusable =
        x.dtype() == DType::F32 && weight.dtype() == DType::F32 && out_shape[D - 1] == inputs;
    out_shape[D - 1] = outputs;
    match route::<B>(fusable) {
        Route::Flex => {
            let (x, weight) = retype::<_, (Tensor<Cpu, D>, Tensor<Cpu, 2>)>((x, weight));
            retype(from_float::<Cpu, D>(flex::linear(
                &float(x),
                &float(weight),
                out_shape.to_vec(),
            )))
        }
        Route::FlexAutodiff => {
            let (x, weight) = retype::<_, (Tensor<CpuTrain, D>, Tensor<CpuTrain, 2>)>((x, weight));
            retype(from_float::<CpuTrain, D>(autodiff::linear(
                float(x),
                float(weight),
                out_shape.to_vec(),
            )))
        }
        Route::Composed => ops::linear(x, weight),
    }
}

/// `x` with axes 1 and 2 exchanged and laid out contiguously: attention's
/// `[batch, heads, seq, head_dim] <-> [batch, seq, heads, head_dim]`. On
/// Flex a multi-threaded copy, where a transposed view would be copied by
/// the next reshape on one thread, element by element (and again in the
/// backward).
pub fn swap_middle_axes<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    match route::<B>(x.dtype() == DType::F32) {
        Route::Flex => {
            let x = retype::<_, Tensor<Cpu, 4>>(x);
            retype(from_float::<Cpu, 4>(flex::swap_middle_axes(&float(x))))
        }
        Route::FlexAutodiff => {
            let x = retype::<_, Tensor<CpuTrain, 4>>(x);
            retype(from_float::<CpuTrain, 4>(autodiff::swap_middle_axes(
                float(x),
            )))
        }
        Route::Composed => x.swap_dims(1, 2),
    }
}

/// One AdamW update of an fp32 parameter, flattened (`train::adamw`):
/// `[value, grad, exp_avg, exp_avg_sq]` in, the new `[value, exp_avg,
/// exp_avg_sq]` out, the same bits as the composed update. On Flex one
/// multi-threaded pass; `None` elsewhere, where the optimizer composes it.
pub fn adamw<B: Backend>(
    tensors: [&Tensor<B, 1>; 4],
    scalars: align_kernels::AdamWScalars,
) -> Option<[Tensor<B, 1>; 3]> {
    let fusable = tensors.iter().all(|t| t.dtype() == DType::F32);
    match route::<B>(fusable) {
        Route::Flex => {
            let flat = tensors.map(|t| float(retype::<_, Tensor<Cpu, 1>>(t.clone())));
            let updated = flex::adamw(flat.each_ref(), scalars);
            Some(updated.map(|t| retype(from_float::<Cpu, 1>(t))))
        }
        Route::FlexAutodiff | Route::Composed => None,
    }
}

/// Each row's log-probability of its target token under a softmax over
/// the vocabulary of fp32 `logits` (`[rows, vocab]`), differentiable, and
/// each row's logging statistics: `train::logps`'s log-softmax and gather.
/// On Flex one pass per row forward and backward; `None` elsewhere, where
/// `train::logps` composes them.
pub fn token_logps<B: Backend>(
    logits: &Tensor<B, 2>,
    targets: &[usize],
) -> Option<(Tensor<B, 1>, Vec<align_kernels::RowStats>)> {
    let [rows, vocab] = logits.dims();
    let fusable =
        logits.dtype() == DType::F32 && rows == targets.len() && targets.iter().all(|&t| t < vocab);
    match route::<B>(fusable) {
        Route::Flex => {
            let logits = float(retype::<_, Tensor<Cpu, 2>>(logits.clone()));
            let (logps, _, stats) = flex::token_logps(&logits, targets);
            Some((retype(from_float::<Cpu, 1>(logps)), stats))
        }
        Route::FlexAutodiff => {
            let logits = float(retype::<_, Tensor<CpuTrain, 2>>(logits.clone()));
            let (logps, stats) = autodiff::token_logps(logits, targets);
            Some((retype(from_float::<CpuTrain, 1>(logps)), stats))
        }
        Route::Composed => None,
    }
}

fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

fn from_float<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// `value` as `To`, which `route` has established is its own type.
fn retype<From: 'static, To: 'static>(value: From) -> To {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<To>>()
        .and_then(Option::take)
        .unwrap_or_else(|| unreachable!("route() matched the backend type"))
}

#[cfg(test)]
mod tests;
