//! One Gemma decoder layer: pre-norm attention and pre-norm MLP, each with a
//! residual connection.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::attention::{Attention, AttentionMask, KeyValues};
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::ops::GemmaBackend;
use super::rope::RopeTable;

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: GemmaBackend> DecoderLayer<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let attended = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), rope, mask);
        self.mlp_residual(x + attended)
    }

    /// [`DecoderLayer::forward`] for generation, with this layer's KV cache.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
        cache: &mut Option<KeyValues<B>>,
    ) -> Tensor<B, 3> {
        let normed = self.input_layernorm.forward(x.clone());
        self.mlp_residual(x + self.self_attn.forward_cached(normed, rope, mask, cache))
    }

    /// The second half of the layer: pre-norm MLP with its residual.
    fn mlp_residual(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let transformed = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + transformed
    }
}
