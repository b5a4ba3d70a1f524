//! The fused kernels as nodes of burn's autodiff graph on the CPU: the
//! forward is Flex's (`flex`), the backward one fused pass.

use burn::tensor::ops::FloatTensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::FlexTensor;

use super::flex;
use crate::backend::flex::record;
use crate::backend::{Cpu, CpuTrain};

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
