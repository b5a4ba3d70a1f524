//! What every binding of a fused kernel (`align_kernels`) to burn's CPU
//! backend shares: Flex tensors laid out row-major for the slice kernels,
//! their outputs wrapped back, and an op recorded as one node of burn's
//! autodiff graph whose backward is one fused pass. Each op's own binding
//! is in the op's file (`model::gemma::ops`, `train::adamw::update`,
//! `train::logps::token_logps`).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;

use super::{Cpu, CpuTrain};

/// `tensor` laid out row-major: itself when it already is, else a copy made
/// on every core (Flex's own copy walks element by element on one thread).
pub fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    let layout = tensor.layout();
    if layout.is_contiguous() {
        return tensor.clone();
    }
    let strides: Option<Vec<usize>> = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect();
    match strides {
        Some(strides) if tensor.dtype() == DType::F32 => {
            let shape: Vec<usize> = (0..layout.num_dims())
                .map(|axis| layout.shape()[axis])
                .collect();
            let values = align_kernels::gather_strided(
                tensor.storage::<f32>(),
                &shape,
                &strides,
                layout.start_offset(),
            );
            FlexTensor::from_data(TensorData::new(values, shape))
        }
        _ => tensor.to_contiguous(),
    }
}

/// The fused kernels read f32 data laid out row-major.
pub fn f32_slice(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .unwrap_or_else(|| unreachable!("callers pass contiguous f32 tensors"))
}

/// A kernel's output in the shape of `like`.
pub fn output(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

/// The last axis's length.
pub fn row_len(tensor: &FlexTensor) -> usize {
    let shape = tensor.layout().shape();
    shape[shape.num_dims() - 1]
}

/// A float tensor's primitive: a `FlexTensor` on `Cpu`, an autodiff tensor
/// over one on `CpuTrain`.
pub fn float<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

/// The tensor of a float primitive.
pub fn from_float<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// Records `op` in the graph with `inputs` as its parents and `out` as its
/// output, keeping `state()` for its backward when any input is tracked.
pub fn record<O: Backward<Cpu, N>, const N: usize>(
    op: O,
    inputs: [&FloatTensor<CpuTrain>; N],
    state: impl FnOnce() -> O::State,
    out: FlexTensor,
) -> FloatTensor<CpuTrain> {
    let parents = inputs.map(|input| input.node.clone());
    match op
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// The backward of an op of `N` inputs: `gradients(state, grad)` gives
/// every input's gradient from the output's, and each goes to its input
/// where that input takes part in the graph.
pub fn backward_all<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(S, FlexTensor) -> [FlexTensor; N],
) {
    let grad = grads.consume::<Cpu>(&ops.node);
    let computed = gradients(ops.state, grad);
    for (parent, grad) in ops.parents.into_iter().zip(computed) {
        if let Some(node) = parent {
            grads.register::<Cpu>(node.id, grad);
        }
    }
}
