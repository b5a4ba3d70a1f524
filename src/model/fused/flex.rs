//! The fused kernels on Flex's tensors: make the inputs contiguous, run the
//! slice kernel, wrap its output.

use burn::tensor::TensorData;
use burn_flex::FlexTensor;

use crate::backend::flex::{contiguous, f32_slice, output, row_len};

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
