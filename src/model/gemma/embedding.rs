//! Token embedding table `[vocab, hidden]`, a module of its own so that its
//! parameter path is `embed_tokens.weight` as in the checkpoint.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor};

#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
        }
    }

    /// `[batch, seq]` ids to `[batch, seq, hidden]` vectors.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        embedding(self.weight.val(), ids)
    }
}
