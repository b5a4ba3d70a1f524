//! Gemma's GeGLU activation, `gelu_tanh(gate) ⊙ up` (transformers'
//! `gelu_pytorch_tanh`). On the CPU one fused pass forward
//! (`align_kernels::gelu_tanh_gated`) and one backward.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::FlexTensor;

use crate::backend::flex::{
    backward_all, contiguous, f32_slice, float, from_float, output, record,
};
use crate::backend::{Composed, Cpu, CpuTrain};

/// `gelu_tanh(gate) ⊙ up`, `gate` and `up` of one shape.
pub trait GeluTanhGatedOp: Backend {
    fn gelu_tanh_gated<const D: usize>(
        gate: Tensor<Self, D>,
        up: Tensor<Self, D>,
    ) -> Tensor<Self, D> {
        composed(gate, up)
    }
}

impl<B: Composed> GeluTanhGatedOp for B {}

impl GeluTanhGatedOp for Cpu {
    fn gelu_tanh_gated<const D: usize>(gate: Tensor<Cpu, D>, up: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
        if !fusable(&gate, &up) {
            return composed(gate, up);
        }
        from_float(forward(&float(gate), &float(up)))
    }
}

impl GeluTanhGatedOp for CpuTrain {
    fn gelu_tanh_gated<const D: usize>(
        gate: Tensor<CpuTrain, D>,
        up: Tensor<CpuTrain, D>,
    ) -> Tensor<CpuTrain, D> {
        if !fusable(&gate, &up) {
            return composed(gate, up);
        }
        let (gate, up) = (float(gate), float(up));
        let out = forward(&gate.primitive, &up.primitive);
        let state = || (gate.primitive.clone(), up.primitive.clone());
        from_float(record(GeluTanhGatedBackward, [&gate, &up], state, out))
    }
}

/// The composed activation, every backend's but Flex's.
pub fn composed<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    gelu_tanh(gate) * up
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

fn fusable<B: Backend, const D: usize>(gate: &Tensor<B, D>, up: &Tensor<B, D>) -> bool {
    gate.dtype() == DType::F32 && up.dtype() == DType::F32 && gate.dims() == up.dims()
}

/// The fused forward on Flex.
fn forward(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (gate, up) = (contiguous(gate), contiguous(up));
    let out = align_kernels::gelu_tanh_gated(f32_slice(&gate), f32_slice(&up));
    output(out, &gate)
}

/// The fused backward: keeps both inputs (the linear layers' outputs,
/// alive anyway).
#[derive(Debug)]
struct GeluTanhGatedBackward;

impl Backward<Cpu, 2> for GeluTanhGatedBackward {
    /// Gate, up.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(gate, up), grad| {
            let (gate, up, grad) = (contiguous(&gate), contiguous(&up), contiguous(&grad));
            let (grad_gate, grad_up) = align_kernels::gelu_tanh_gated_backward(
                f32_slice(&gate),
                f32_slice(&up),
                f32_slice(&grad),
            );
            [output(grad_gate, &gate), output(grad_up, &gate)]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu_device;

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
