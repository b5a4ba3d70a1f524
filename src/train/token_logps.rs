//! Each row's log-probability of its target token under a softmax over the
//! vocabulary of fp32 logits, differentiable, and each row's logging
//! statistics (`train::logps` sums them per sequence): a log-softmax and a
//! gather composed from tensor ops, and on burn's CPU backend one pass per
//! row forward (`align_kernels::token_logps`) and one backward. A backend
//! extension trait, as the model's ops are (`model::gemma::ops`).

use align_kernels::RowStats;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::FlexTensor;

use crate::backend::flex::{contiguous, f32_slice, float, from_float, output, record, row_len};
use crate::backend::{Composed, Cpu, CpuTrain};

/// `logits` `[rows, vocab]` (fp32) and each row's target token id: the
/// target's log-probability per row (`[rows]`) and the row's statistics.
pub trait TokenLogpsOp: Backend {
    fn token_logps(logits: Tensor<Self, 2>, targets: &[usize]) -> (Tensor<Self, 1>, Vec<RowStats>) {
        composed(logits, targets)
    }
}

impl<B: Composed> TokenLogpsOp for B {}

impl TokenLogpsOp for Cpu {
    fn token_logps(logits: Tensor<Cpu, 2>, targets: &[usize]) -> (Tensor<Cpu, 1>, Vec<RowStats>) {
        if !fusable(&logits, targets) {
            return composed(logits, targets);
        }
        let (logps, _, stats) = forward(&float(logits), targets);
        (from_float(logps), stats)
    }
}

impl TokenLogpsOp for CpuTrain {
    fn token_logps(
        logits: Tensor<CpuTrain, 2>,
        targets: &[usize],
    ) -> (Tensor<CpuTrain, 1>, Vec<RowStats>) {
        if !fusable(&logits, targets) {
            return composed(logits, targets);
        }
        let logits = float(logits);
        let (logps, log_normalizers, stats) = forward(&logits.primitive, targets);
        let state = || (logits.primitive.clone(), targets.to_vec(), log_normalizers);
        let logps = record(TokenLogpsBackward, [&logits], state, logps);
        (from_float(logps), stats)
    }
}

/// The log-softmax and a gather, every backend's but Flex's.
pub fn composed<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &[usize],
) -> (Tensor<B, 1>, Vec<RowStats>) {
    let n = targets.len();
    let targets: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let device = logits.device();
    let logps = log_softmax(logits.clone(), 1);
    let target_ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets.clone(), [n, 1]), &device);
    let picked = logps.clone().gather(1, target_ids).reshape([n]);
    let (logits, logps) = (logits.detach(), logps.detach());
    // The three statistics in one `[3, n]` tensor, read back at once (each
    // read waits for the device); token ids are exact in f32 below 2^24.
    let statistics = Tensor::cat(
        vec![
            logits.clone().mean_dim(1).reshape([1, n]).cast(DType::F32),
            (logps.clone().exp() * logps)
                .sum_dim(1)
                .reshape([1, n])
                .neg()
                .cast(DType::F32),
            logits.argmax(1).reshape([1, n]).float().cast(DType::F32),
        ],
        0,
    );
    let host = statistics
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 statistics");
    let (mean_logits, rest) = host.split_at(n);
    let (entropy, argmax) = rest.split_at(n);
    let stats = (0..n)
        .map(|i| RowStats {
            mean_logit: mean_logits[i],
            entropy: entropy[i],
            target_is_top: argmax[i] as i64 == targets[i],
        })
        .collect();
    (picked, stats)
}

/// `log(softmax(x))` along `dim`, shifted by the (detached) maximum,
/// composed from elementary ops for the reason `model::gemma::ops::attention::softmax`
/// gives: the policy (autodiff) and the reference (inner backend) compute
/// the same bits.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let log_sum_exp = shifted.clone().exp().sum_dim(dim).log();
    shifted - log_sum_exp
}

fn fusable<B: Backend>(logits: &Tensor<B, 2>, targets: &[usize]) -> bool {
    let [rows, vocab] = logits.dims();
    logits.dtype() == DType::F32 && rows == targets.len() && targets.iter().all(|&t| t < vocab)
}

/// The fused forward on Flex: each row's target log-probability (`[rows]`),
/// log-normaliser and statistics.
fn forward(logits: &FlexTensor, targets: &[usize]) -> (FlexTensor, Vec<f32>, Vec<RowStats>) {
    let logits = contiguous(logits);
    let found = align_kernels::token_logps(f32_slice(&logits), row_len(&logits), targets);
    let rows = found.logps.len();
    let logps = FlexTensor::from_data(TensorData::new(found.logps, [rows]));
    (logps, found.log_normalizers, found.stats)
}

/// The fused backward: keeps the logits, the targets and each row's
/// log-normaliser.
#[derive(Debug)]
struct TokenLogpsBackward;

impl Backward<Cpu, 1> for TokenLogpsBackward {
    /// Logits, targets, log-normalisers.
    type State = (FlexTensor, Vec<usize>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, log_normalizers) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| {
            let (logits, grad) = (contiguous(&logits), contiguous(&grad));
            let grad_logits = align_kernels::token_logps_backward(
                f32_slice(&logits),
                row_len(&logits),
                &targets,
                &log_normalizers,
                f32_slice(&grad),
            );
            output(grad_logits, &logits)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::testing::{assert_close, floats, leaf, values};

    #[test]
    fn token_logps_match_the_composed_log_softmax() {
        let (rows, vocab) = (5, 37);
        let targets: Vec<usize> = (0..rows).map(|r| r * 7 % vocab).collect();
        let ids: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
        let run = |fused: bool| {
            let logits = leaf([rows, vocab], 1);
            let picked = if fused {
                CpuTrain::token_logps(logits.clone(), &targets).0
            } else {
                let ids = Tensor::<CpuTrain, 2, Int>::from_data(
                    TensorData::new(ids.clone(), [rows, 1]),
                    &Default::default(),
                );
                log_softmax(logits.clone(), 1)
                    .gather(1, ids)
                    .reshape([rows])
            };
            let weights = Tensor::<CpuTrain, 1>::from_data(
                TensorData::new(values(rows, 9), [rows]),
                &Default::default(),
            );
            let grads = (picked.clone() * weights).sum().backward();
            (
                floats(picked),
                floats(logits.grad(&grads).expect("a gradient")),
            )
        };
        let ((fused, fused_grad), (composed, composed_grad)) = (run(true), run(false));
        assert_close(fused, composed, 1e-5, "log-probs");
        assert_close(fused_grad, composed_grad, 1e-5, "gradient of the logits");
        let logits = leaf([rows, vocab], 1);
        let train = floats(CpuTrain::token_logps(logits.clone(), &targets).0);
        let inner = floats(Cpu::token_logps(logits.inner(), &targets).0);
        assert_eq!(train, inner, "policy and reference bits");
    }
}
