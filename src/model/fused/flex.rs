//! The fused kernels on Flex's tensors: make the inputs contiguous, run the
//! slice kernel, wrap its output.

use burn::tensor::TensorData;
use burn_flex::FlexTensor;

/// `tensor` laid out row-major: itself when it already is, else a copy made
/// on every core (Flex's own copy walks element by element on one thread).
fn contiguous(tensor: &FlexTensor) -> FlexTensor {
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
        Some(strides) if tensor.dtype() == burn::tensor::DType::F32 => {
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
fn f32_slice(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .unwrap_or_else(|| unreachable!("callers pass contiguous f32 tensors"))
}

fn output(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

/// The last axis's length.
fn row_len(tensor: &FlexTensor) -> usize {
    let shape = tensor.layout().shape();
    shape[shape.num_dims() - 1]
}

/// A bool tensor's bytes (Flex stores one byte, 0 or 1, per element).
fn mask_bytes(blocked: &FlexTensor) -> &[u8] {
    &blocked.bytes()[..blocked.layout().num_elements()]
}

/// The sizes of an attention call from its operands (see `fused::attention`).
fn attention_shape(
    q: &FlexTensor,
    k: &FlexTensor,
    blocked: &FlexTensor,
) -> align_kernels::AttentionShape {
    let (q, k, mask) = (
        q.layout().shape(),
        k.layout().shape(),
        blocked.layout().shape(),
    );
    align_kernels::AttentionShape {
        batch: q[0],
        heads: q[1],
        kv_heads: k[1],
        queries: q[2],
        keys: k[2],
        head_dim: q[3],
        mask_batch: mask[0],
        mask_heads: mask[1],
    }
}

/// The attention output `[batch, heads, queries, head_dim]` and the
/// probabilities `[batch, heads, queries, keys]`.
pub fn attention(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    blocked: &FlexTensor,
    scale: f32,
) -> (FlexTensor, FlexTensor) {
    let (q, k, v, blocked) = (
        contiguous(q),
        contiguous(k),
        contiguous(v),
        blocked.to_contiguous(),
    );
    let shape = attention_shape(&q, &k, &blocked);
    let (out, probs) = align_kernels::attention(
        f32_slice(&q),
        f32_slice(&k),
        f32_slice(&v),
        mask_bytes(&blocked),
        shape,
        scale,
    );
    let probs_shape = vec![shape.batch, shape.heads, shape.queries, shape.keys];
    (
        output(out, &q),
        FlexTensor::from_data(TensorData::new(probs, probs_shape)),
    )
}

/// The gradients of `q`, `k` and `v` from `grad`, the output's, and the
/// forward's probabilities.
pub fn attention_backward(
    [q, k, v]: [&FlexTensor; 3],
    blocked: &FlexTensor,
    probs: &FlexTensor,
    grad: &FlexTensor,
    scale: f32,
) -> [FlexTensor; 3] {
    let (q, k, v, blocked, grad) = (
        contiguous(q),
        contiguous(k),
        contiguous(v),
        blocked.to_contiguous(),
        contiguous(grad),
    );
    let shape = attention_shape(&q, &k, &blocked);
    let (dq, dk, dv) = align_kernels::attention_backward(
        f32_slice(&q),
        f32_slice(&k),
        f32_slice(&v),
        mask_bytes(&blocked),
        f32_slice(probs),
        f32_slice(&grad),
        shape,
        scale,
    );
    [output(dq, &q), output(dk, &k), output(dv, &v)]
}

pub fn gelu_tanh_gated(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (gate, up) = (contiguous(gate), contiguous(up));
    let out = align_kernels::gelu_tanh_gated(f32_slice(&gate), f32_slice(&up));
    output(out, &gate)
}

/// The gradients of `gate` and `up`.
pub fn gelu_tanh_gated_backward(
    gate: &FlexTensor,
    up: &FlexTensor,
    grad: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let (gate, up, grad) = (contiguous(gate), contiguous(up), contiguous(grad));
    let (grad_gate, grad_up) =
        align_kernels::gelu_tanh_gated_backward(f32_slice(&gate), f32_slice(&up), f32_slice(&grad));
    (output(grad_gate, &gate), output(grad_up, &gate))
}

/// The normalised `x` and each row's `r = 1 / sqrt(mean(x²) + eps)`.
pub fn rms_norm(x: &FlexTensor, weight: &FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let (out, inv_rms) = align_kernels::rms_norm(f32_slice(&x), f32_slice(&weight), eps);
    let rows = inv_rms.len();
    let inv_rms = FlexTensor::from_data(TensorData::new(inv_rms, [rows]));
    (output(out, &x), inv_rms)
}

/// The gradients of `x` and `weight`.
pub fn rms_norm_backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    inv_rms: &FlexTensor,
    grad: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let (x, weight, grad) = (contiguous(x), contiguous(weight), contiguous(grad));
    let (grad_x, grad_weight) = align_kernels::rms_norm_backward(
        f32_slice(&x),
        f32_slice(&weight),
        f32_slice(inv_rms),
        f32_slice(&grad),
    );
    (output(grad_x, &x), output(grad_weight, &weight))
}

/// `x`'s `[batch, seq, heads, head_dim]`.
fn rope_shape(x: &FlexTensor) -> align_kernels::RopeShape {
    let shape = x.layout().shape();
    align_kernels::RopeShape {
        batch: shape[0],
        seq: shape[1],
        heads: shape[2],
        head_dim: shape[3],
    }
}

/// Rotates `x` (`[batch, seq, heads, head_dim]`) into `[batch, heads, seq, head_dim]`.
pub fn rope(x: &FlexTensor, cos: &FlexTensor, signed_sin: &FlexTensor) -> FlexTensor {
    let (x, cos, signed_sin) = (contiguous(x), contiguous(cos), contiguous(signed_sin));
    let shape = rope_shape(&x);
    let out = align_kernels::rope(
        f32_slice(&x),
        f32_slice(&cos),
        f32_slice(&signed_sin),
        shape,
    );
    let heads_first = vec![shape.batch, shape.heads, shape.seq, shape.head_dim];
    FlexTensor::from_data(TensorData::new(out, heads_first))
}

/// The gradient of `x` (the tables' shape) from that of the heads-first output.
pub fn rope_backward(cos: &FlexTensor, signed_sin: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (cos, signed_sin, grad) = (contiguous(cos), contiguous(signed_sin), contiguous(grad));
    let grad_x = align_kernels::rope_backward(
        f32_slice(&grad),
        f32_slice(&cos),
        f32_slice(&signed_sin),
        rope_shape(&cos),
    );
    output(grad_x, &cos)
}

/// `x · Wᵀ` over the last axis of `x`; `out_shape` is `x`'s with the last
/// axis `W`'s rows.
pub fn linear(x: &FlexTensor, weight: &FlexTensor, out_shape: Vec<usize>) -> FlexTensor {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let rows = x.layout().num_elements() / row_len(&x);
    let y = align_kernels::linear(f32_slice(&x), f32_slice(&weight), rows);
    FlexTensor::from_data(TensorData::new(y, out_shape))
}

/// The gradients of `x` and `W`, each in its operand's shape.
pub fn linear_backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let (x, weight, grad) = (contiguous(x), contiguous(weight), contiguous(grad));
    let rows = x.layout().num_elements() / row_len(&x);
    let (grad_x, grad_weight) =
        align_kernels::linear_backward(f32_slice(&x), f32_slice(&weight), f32_slice(&grad), rows);
    (output(grad_x, &x), output(grad_weight, &weight))
}

/// `x` (`[a, b, c, d]`) as `[a, c, b, d]`, contiguous.
pub fn swap_middle_axes(x: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let dims = x.layout().shape();
    let shape = [dims[0], dims[1], dims[2], dims[3]];
    let out = align_kernels::swap_middle_axes(f32_slice(&x), shape);
    let swapped = vec![shape[0], shape[2], shape[1], shape[3]];
    FlexTensor::from_data(TensorData::new(out, swapped))
}

/// One AdamW update: the new value and moments, from the value, gradient
/// and moments (all flat, of one length).
pub fn adamw(
    [value, grad, exp_avg, exp_avg_sq]: [&FlexTensor; 4],
    scalars: align_kernels::AdamWScalars,
) -> [FlexTensor; 3] {
    let [value, grad, exp_avg, exp_avg_sq] = [value, grad, exp_avg, exp_avg_sq].map(contiguous);
    let updated = align_kernels::adamw(
        f32_slice(&value),
        f32_slice(&grad),
        f32_slice(&exp_avg),
        f32_slice(&exp_avg_sq),
        scalars,
    );
    updated.map(|values| output(values, &value))
}

/// Each row's target log-probability (`[rows]`), log-normaliser and statistics.
pub fn token_logps(
    logits: &FlexTensor,
    targets: &[usize],
) -> (FlexTensor, Vec<f32>, Vec<align_kernels::RowStats>) {
    let logits = contiguous(logits);
    let found = align_kernels::token_logps(f32_slice(&logits), row_len(&logits), targets);
    let rows = found.logps.len();
    let logps = FlexTensor::from_data(TensorData::new(found.logps, [rows]));
    (logps, found.log_normalizers, found.stats)
}

/// The gradient of the logits from that of the rows' log-probabilities.
pub fn token_logps_backward(
    logits: &FlexTensor,
    targets: &[usize],
    log_normalizers: &[f32],
    grad: &FlexTensor,
) -> FlexTensor {
    let (logits, grad) = (contiguous(logits), contiguous(grad));
    let grad_logits = align_kernels::token_logps_backward(
        f32_slice(&logits),
        row_len(&logits),
        targets,
        log_normalizers,
        f32_slice(&grad),
    );
    output(grad_logits, &logits)
}
