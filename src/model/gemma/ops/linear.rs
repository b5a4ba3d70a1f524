//! The bias-free linear layer's product `x · Wᵀ` over the last axis of
//! `x`, `W` in PyTorch's `[out, in]`. On the CPU `align_kernels::linear`
//! writes the product on every core (Flex's matmul zeroes and then copies
//! its output on one thread), and one call gives both gradients.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::FlexTensor;

use crate::backend::flex::{
    backward_all, contiguous, f32_slice, float, from_float, output, record, row_len,
};
use crate::backend::{Composed, Cpu, CpuTrain};

/// `x · Wᵀ` over the last axis of `x`, `weight` in PyTorch's `[out, in]`.
pub trait LinearOp: Backend {
    fn bias_free_linear<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 2>,
    ) -> Tensor<Self, D> {
        composed(x, weight)
    }
}

impl<B: Composed> LinearOp for B {}

impl LinearOp for Cpu {
    fn bias_free_linear<const D: usize>(
        x: Tensor<Cpu, D>,
        weight: Tensor<Cpu, 2>,
    ) -> Tensor<Cpu, D> {
        let Some(out_shape) = fused_shape(&x, &weight) else {
            return composed(x, weight);
        };
        from_float(forward(&float(x), &float(weight), out_shape))
    }
}

impl LinearOp for CpuTrain {
    fn bias_free_linear<const D: usize>(
        x: Tensor<CpuTrain, D>,
        weight: Tensor<CpuTrain, 2>,
    ) -> Tensor<CpuTrain, D> {
        let Some(out_shape) = fused_shape(&x, &weight) else {
            return composed(x, weight);
        };
        let (x, weight) = (float(x), float(weight));
        let out = forward(&x.primitive, &weight.primitive, out_shape);
        let state = || (x.primitive.clone(), weight.primitive.clone());
        from_float(record(LinearBackward, [&x, &weight], state, out))
    }
}

/// The composed product, every backend's but Flex's: one matmul of the
/// rows of `x`.
pub fn composed<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let mut out_shape = x.dims();
    let features = out_shape[D - 1];
    out_shape[D - 1] = weight.dims()[0];
    let rows = x.shape().num_elements() / features;
    x.reshape([rows, features])
        .matmul(weight.transpose())
        .reshape(out_shape)
}

/// The output's shape (`x`'s with the last axis `W`'s rows) when the
/// fused kernel takes these operands (fp32, matching inner sizes).
fn fused_shape<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 2>,
) -> Option<Vec<usize>> {
    let [outputs, inputs] = weight.dims();
    let mut out_shape = x.dims();
    let fusable =
        x.dtype() == DType::F32 && weight.dtype() == DType::F32 && out_shape[D - 1] == inputs;
    out_shape[D - 1] = outputs;
    fusable.then(|| out_shape.to_vec())
}

/// The fused forward on Flex; `out_shape` is `x`'s with the last axis
/// `W`'s rows.
fn forward(x: &FlexTensor, weight: &FlexTensor, out_shape: Vec<usize>) -> FlexTensor {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let rows = x.layout().num_elements() / row_len(&x);
    let y = align_kernels::linear(f32_slice(&x), f32_slice(&weight), rows);
    FlexTensor::from_data(TensorData::new(y, out_shape))
}

/// The fused backward: keeps both operands.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Cpu, 2> for LinearBackward {
    /// x, W.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(x, weight), grad| {
            let (x, weight, grad) = (contiguous(&x), contiguous(&weight), contiguous(&grad));
            let rows = x.layout().num_elements() / row_len(&x);
            let (grad_x, grad_weight) = align_kernels::linear_backward(
                f32_slice(&x),
                f32_slice(&weight),
                f32_slice(&grad),
                rows,
            );
            [output(grad_x, &x), output(grad_weight, &weight)]
        });
    }
}
