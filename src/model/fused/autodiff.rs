//! The fused kernels as nodes of burn's autodiff graph on the CPU: the
//! forward is Flex's (`flex`), the backward one fused pass.

use burn::tensor::ops::FloatTensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn_flex::FlexTensor;

use super::flex;
use crate::backend::{Cpu, CpuTrain};

/// Records `op` in the graph with `inputs` as its parents and `out` as its
/// output, keeping `state()` for its backward when any input is tracked.
fn record<O: Backward<Cpu, N>, const N: usize>(
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

/// Keeps the operands, the mask and the probabilities.
#[derive(Debug)]
struct Attention;

impl Backward<Cpu, 3> for Attention {
    /// q, k, v, mask, probabilities, scale.
    type State = ([FlexTensor; 3], FlexTensor, FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |([q, k, v], blocked, probs, scale), grad| {
            flex::attention_backward([&q, &k, &v], &blocked, &probs, &grad, scale)
        });
    }
}

pub fn attention(
    [q, k, v]: [FloatTensor<CpuTrain>; 3],
    blocked: FlexTensor,
    scale: f32,
) -> FloatTensor<CpuTrain> {
    let (out, probs) = flex::attention(&q.primitive, &k.primitive, &v.primitive, &blocked, scale);
    let state = || {
        let operands = [&q, &k, &v].map(|t| t.primitive.clone());
        (operands, blocked, probs, scale)
    };
    record(Attention, [&q, &k, &v], state, out)
}

/// Keeps both inputs (the linear layers' outputs, alive anyway).
#[derive(Debug)]
struct GeluTanhGated;

impl Backward<Cpu, 2> for GeluTanhGated {
    /// Gate, up.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(gate, up), grad| {
            flex::gelu_tanh_gated_backward(&gate, &up, &grad).into()
        });
    }
}

pub fn gelu_tanh_gated(
    gate: FloatTensor<CpuTrain>,
    up: FloatTensor<CpuTrain>,
) -> FloatTensor<CpuTrain> {
    let out = flex::gelu_tanh_gated(&gate.primitive, &up.primitive);
    let state = || (gate.primitive.clone(), up.primitive.clone());
    record(GeluTanhGated, [&gate, &up], state, out)
}

/// Keeps the input, the weight and each row's `r`.
#[derive(Debug)]
struct RmsNorm;

impl Backward<Cpu, 2> for RmsNorm {
    /// x, weight, r per row.
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(x, weight, inv_rms), grad| {
            flex::rms_norm_backward(&x, &weight, &inv_rms, &grad).into()
        });
    }
}

pub fn rms_norm(
    x: FloatTensor<CpuTrain>,
    weight: FloatTensor<CpuTrain>,
    eps: f32,
) -> FloatTensor<CpuTrain> {
    let (out, inv_rms) = flex::rms_norm(&x.primitive, &weight.primitive, eps);
    let state = || (x.primitive.clone(), weight.primitive.clone(), inv_rms);
    record(RmsNorm, [&x, &weight], state, out)
}

/// The backward of an op of `N` inputs: `gradients(state, grad)` gives
/// every input's gradient from the output's, and each goes to its input
/// where that input takes part in the graph.
fn backward_all<S, const N: usize>(
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

/// Keeps the tables: the rotation is linear in `x`.
#[derive(Debug)]
struct Rope;

impl Backward<Cpu, 1> for Rope {
    /// cos, signed sin.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, signed_sin) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            flex::rope_backward(&cos, &signed_sin, &grad)
        });
    }
}

/// The tables are constants: no gradient flows into them.
pub fn rope(
    x: FloatTensor<CpuTrain>,
    cos: FloatTensor<CpuTrain>,
    signed_sin: FloatTensor<CpuTrain>,
) -> FloatTensor<CpuTrain> {
    let out = flex::rope(&x.primitive, &cos.primitive, &signed_sin.primitive);
    record(Rope, [&x], || (cos.primitive, signed_sin.primitive), out)
}

/// Keeps both operands.
#[derive(Debug)]
struct Linear;

impl Backward<Cpu, 2> for Linear {
    /// x, W.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_all(ops, grads, |(x, weight), grad| {
            flex::linear_backward(&x, &weight, &grad).into()
        });
    }
}

pub fn linear(
    x: FloatTensor<CpuTrain>,
    weight: FloatTensor<CpuTrain>,
    out_shape: Vec<usize>,
) -> FloatTensor<CpuTrain> {
    let out = flex::linear(&x.primitive, &weight.primitive, out_shape);
    let state = || (x.primitive.clone(), weight.primitive.clone());
    record(Linear, [&x, &weight], state, out)
}

/// Its own inverse: the gradient is swapped back.
#[derive(Debug)]
struct SwapMiddleAxes;

impl Backward<Cpu, 1> for SwapMiddleAxes {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            flex::swap_middle_axes(&grad)
        });
    }
}

pub fn swap_middle_axes(x: FloatTensor<CpuTrain>) -> FloatTensor<CpuTrain> {
    let out = flex::swap_middle_axes(&x.primitive);
    record(SwapMiddleAxes, [&x], || (), out)
}

/// Keeps the logits, the targets and each row's log-normaliser.
#[derive(Debug)]
struct TokenLogps;

impl Backward<Cpu, 1> for TokenLogps {
    /// Logits, targets, log-normalisers.
    type State = (FlexTensor, Vec<usize>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, log_normalizers) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            flex::token_logps_backward(&logits, &targets, &log_normalizers, &grad)
        });
    }
}

pub fn token_logps(
    logits: FloatTensor<CpuTrain>,
    targets: &[usize],
) -> (FloatTensor<CpuTrain>, Vec<align_kernels::RowStats>) {
    let (logps, log_normalizers, stats) = flex::token_logps(&logits.primitive, targets);
    let state = || (logits.primitive.clone(), targets.to_vec(), log_normalizers);
    (record(TokenLogps, [&logits], state, logps), stats)
}
