//! A bias-free linear layer that keeps PyTorch's weight layout `[out, in]`,
//! so checkpoint tensors load and save without transposes or name maps.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::ops::GemmaBackend;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out_features, in_features]`, as in `torch.nn.Linear`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
        }
    }
}

impl<B: GemmaBackend> Linear<B> {
    /// `x @ weightᵀ` over the last dimension of a `[batch, seq, in]` input.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        B::bias_free_linear(x, self.weight.val())
    }
}
