//! The token log-probs (one multi-threaded pass per row forward and one
//! backward) and the optimizer's AdamW update as fused kernels where the
//! backend is burn's CPU one (`align_kernels`). The model's own ops are
//! backend extension traits (`model::gemma::ops`).
//!
//! The backend is told apart at run time (`TypeId`), not by a trait bound:
//! the model stays generic over `B: Backend`, and only this module knows
//! that a faster path exists.

mod autodiff;
mod flex;

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::backend::flex::{float, from_float};
use crate::backend::{Cpu, CpuTrain};

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
