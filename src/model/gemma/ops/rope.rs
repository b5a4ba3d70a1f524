//! The rotary embedding of `x` (`[batch, seq, heads, head_dim]`) against
//! constant tables of its shape, `x ⊙ cos + swap_halves(x) ⊙ signed_sin`
//! (the tables: `gemma::rope`), returned heads-first: `[batch, heads, seq,
//! head_dim]`. On the CPU one fused pass (`align_kernels::rope`) rotates
//! and transposes, and one carries the gradient back.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::FlexTensor;

use crate::backend::flex::{contiguous, f32_slice, float, from_float, output, record};
use crate::backend::{Composed, Cpu, CpuTrain};

/// `x` rotated by the tables `cos` and `signed_sin` of its shape, heads-first.
pub trait RopeOp: Backend {
    fn rope(
        x: Tensor<Self, 4>,
        cos: Tensor<Self, 4>,
        signed_sin: Tensor<Self, 4>,
    ) -> Tensor<Self, 4> {
        composed(x, cos, signed_sin)
    }
}

impl<B: Composed> RopeOp for B {}

impl RopeOp for Cpu {
    fn rope(x: Tensor<Cpu, 4>, cos: Tensor<Cpu, 4>, signed_sin: Tensor<Cpu, 4>) -> Tensor<Cpu, 4> {
        if !fusable(&x, &cos, &signed_sin) {
            return composed(x, cos, signed_sin);
        }
        from_float(forward(&float(x), &float(cos), &float(signed_sin)))
    }
}

impl RopeOp for CpuTrain {
    /// The tables are constants: no gradient flows into them.
    fn rope(
        x: Tensor<CpuTrain, 4>,
        cos: Tensor<CpuTrain, 4>,
        signed_sin: Tensor<CpuTrain, 4>,
    ) -> Tensor<CpuTrain, 4> {
        if !fusable(&x, &cos, &signed_sin) {
            return composed(x, cos, signed_sin);
        }
        let (x, cos, signed_sin) = (float(x), float(cos), float(signed_sin));
        let out = forward(&x.primitive, &cos.primitive, &signed_sin.primitive);
        let state = || (cos.primitive, signed_sin.primitive);
        from_float(record(RopeBackward, [&x], state, out))
    }
}

/// The composed rotation, every backend's but Flex's.
pub fn composed<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    signed_sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    (x.clone() * cos + swap_halves(x) * signed_sin).swap_dims(1, 2)
}

/// `(x1, x2) -> (x2, x1)` over the last dimension.
fn swap_halves<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2, x1], 3)
}

fn fusable<B: Backend>(x: &Tensor<B, 4>, cos: &Tensor<B, 4>, signed_sin: &Tensor<B, 4>) -> bool {
    [x.dtype(), cos.dtype(), signed_sin.dtype()] == [DType::F32; 3]
        && x.dims() == cos.dims()
        && x.dims() == signed_sin.dims()
        && x.dims()[3].is_multiple_of(2)
}

/// `x`'s `[batch, seq, heads, head_dim]`.
fn shape(x: &FlexTensor) -> align_kernels::RopeShape {
    let shape = x.layout().shape();
    align_kernels::RopeShape {
        batch: shape[0],
        seq: shape[1],
        heads: shape[2],
        head_dim: shape[3],
    }
}

/// The fused forward on Flex.
fn forward(x: &FlexTensor, cos: &FlexTensor, signed_sin: &FlexTensor) -> FlexTensor {
    let (x, cos, signed_sin) = (contiguous(x), contiguous(cos), contiguous(signed_sin));
    let shape = shape(&x);
    let out = align_kernels::rope(
        f32_slice(&x),
        f32_slice(&cos),
        f32_slice(&signed_sin),
        shape,
    );
    let heads_first = vec![shape.batch, shape.heads, shape.seq, shape.head_dim];
    FlexTensor::from_data(TensorData::new(out, heads_first))
}

/// The fused backward: keeps the tables (the rotation is linear in `x`).
#[derive(Debug)]
struct RopeBackward;

impl Backward<Cpu, 1> for RopeBackward {
    /// cos, signed sin.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, signed_sin) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            let (cos, signed_sin, grad) =
                (contiguous(&cos), contiguous(&signed_sin), contiguous(&grad));
            let grad_x = align_kernels::rope_backward(
                f32_slice(&grad),
                f32_slice(&cos),
                f32_slice(&signed_sin),
                shape(&cos),
            );
            output(grad_x, &cos)
        });
    }
}
