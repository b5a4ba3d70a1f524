//! Attention's head transposes: `x` with axes 1 and 2 exchanged and laid
//! out contiguously, `[batch, heads, seq, head_dim] <-> [batch, seq, heads,
//! head_dim]`. On the CPU a multi-threaded copy
//! (`align_kernels::swap_middle_axes`), where a transposed view would be
//! copied by the next reshape on one thread, element by element (and again
//! in the backward).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::FlexTensor;

use crate::backend::flex::{contiguous, f32_slice, float, from_float, record};
use crate::backend::{Composed, Cpu, CpuTrain};

/// `x` (`[a, b, c, d]`) as `[a, c, b, d]`.
pub trait SwapMiddleAxesOp: Backend {
    fn swap_middle_axes(x: Tensor<Self, 4>) -> Tensor<Self, 4> {
        composed(x)
    }
}

impl<B: Composed> SwapMiddleAxesOp for B {}

impl SwapMiddleAxesOp for Cpu {
    fn swap_middle_axes(x: Tensor<Cpu, 4>) -> Tensor<Cpu, 4> {
        if x.dtype() != DType::F32 {
            return composed(x);
        }
        from_float(forward(&float(x)))
    }
}

impl SwapMiddleAxesOp for CpuTrain {
    fn swap_middle_axes(x: Tensor<CpuTrain, 4>) -> Tensor<CpuTrain, 4> {
        if x.dtype() != DType::F32 {
            return composed(x);
        }
        let x = float(x);
        let out = forward(&x.primitive);
        from_float(record(SwapMiddleAxesBackward, [&x], || (), out))
    }
}

/// The composed transpose, every backend's but Flex's: a view.
pub fn composed<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.swap_dims(1, 2)
}

/// The fused copy on Flex.
fn forward(x: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let dims = x.layout().shape();
    let shape = [dims[0], dims[1], dims[2], dims[3]];
    let out = align_kernels::swap_middle_axes(f32_slice(&x), shape);
    let swapped = vec![shape[0], shape[2], shape[1], shape[3]];
    FlexTensor::from_data(TensorData::new(out, swapped))
}

/// Its own inverse: the gradient is swapped back.
#[derive(Debug)]
struct SwapMiddleAxesBackward;

impl Backward<Cpu, 1> for SwapMiddleAxesBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| forward(&grad));
    }
}
