//! The log-softmax composed from elementary ops rather than taken from burn.
//!
//! Why: the policy runs on the autodiff backend and the frozen reference on
//! the inner backend. burn-autodiff computes (log-)softmax by composing
//! elementary ops while the Flex CPU backend uses a fused kernel, so the two
//! differ in the last bit. TRL's policy and reference run the same kernels:
//! at step 1 (policy = reference) its rewards are exactly 0 and
//! `rewards/accuracies` (a strict `>`) exactly 0. Composing the ops here
//! makes both backends compute the same bits.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `log(softmax(x))` along `dim`, shifted by the (detached) maximum.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let log_sum_exp = shifted.clone().exp().sum_dim(dim).log();
    shifted - log_sum_exp
}
