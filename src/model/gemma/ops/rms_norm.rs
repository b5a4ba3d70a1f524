//! Gemma's RMSNorm over the last axis of fp32 `x`: `x · r · (1 + weight)`,
//! `r = 1 / sqrt(mean(x²) + eps)` per row (`weight` is the offset from 1,
//! as stored). On the CPU one fused pass forward (`align_kernels::rms_norm`)
//! and one backward.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::FlexTensor;

use crate::backend::flex::{
    backward_all, contiguous, f32_slice, float, from_float, output, record,
};
use crate::backend::{Composed, Cpu, CpuTrain};

/// Gemma's RMSNorm of `x` over its last axis, of `weight`'s length.
pub trait RmsNormOp: Backend {
    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        composed(x, weight, eps)
    }
}

impl<B: Composed> RmsNormOp for B {}

impl RmsNormOp for Cpu {
    fn rms_norm<const D: usize>(
        x: Tensor<Cpu, D>,
        weight: Tensor<Cpu, 1>,
        eps: f64,
    ) -> Tensor<Cpu, D> {
        if !fusable(&x, &weight) {
            return composed(x, weight, eps);
        }
        let (out, _) = forward(&float(x), &float(weight), eps as f32);
        from_float(out)
    }
}

impl RmsNormOp for CpuTrain {
    fn rms_norm<const D: usize>(
        x: Tensor<CpuTrain, D>,
        weight: Tensor<CpuTrain, 1>,
        eps: f64,
    ) -> Tensor<CpuTrain, D> {
        if !fusable(&x, &weight) {
            return composed(x, weight, eps);
        }
        let (x, weight) = (float(x), float(weight));
        let (out, inv_rms) = forward(&x.primitive, &weight.primitive, eps as f32);
        let state = || (x.primitive.clone(), weight.primitive.clone(), inv_rms);
        from_float(record(RmsNormBackward, [&x, &weight], state, out))
    }
}

/// The composed norm, every backend's but Flex's.
pub fn composed<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    let normed = x * (mean_square + eps).sqrt().recip();
    normed * (weight + 1.0).unsqueeze::<D>()
}

fn fusable<B: Backend, const D: usize>(x: &Tensor<B, D>, weight: &Tensor<B, 1>) -> bool {
    x.dtype() == DType::F32 && weight.dtype() == DType::F32 && x.dims()[D - 1] == weight.dims()[0]
}

/// The fused forward on Flex: the normalised `x` and each row's `r`.
fn forward(x: &FlexTensor, weight: &FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let (out, inv_rms) = align_kernels::rms_norm(f32_slice(&x), f32_slice(&weight), eps);
    let rows = inv_rms.len();
    let inv_rms = FlexTensor::from_data(TensorData::new(inv_rms, [rows]));
    (output(out, &x), inv_rms)
}

/// The fused backward: keeps the input, the weight and each row's `r`.
#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Cpu, 2> for RmsNormBackward {
    /// x, weight, r per row.
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(x, weight, inv_rms), grad| {
            let (x, weight, grad) = (contiguous(&x), contiguous(&weight), contiguous(&grad));
            let (grad_x, grad_weight) = align_kernels::rms_norm_backward(
                f32_slice(&x),
                f32_slice(&weight),
                f32_slice(&inv_rms),
                f32_slice(&grad),
            );
            [output(grad_x, &x), output(grad_weight, &weight)]
        });
    }
}
