//! Assembling a [`Gemma`] from named tensors. A [`WeightSource`] hands out
//! each tensor by its Hugging Face name with the shape the config implies; a
//! checkpoint reader and a random initialiser are both sources, so the model
//! is put together in one place (as candle's `VarBuilder` does).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};

use super::attention::{Attention, HeadShape};
use super::block::DecoderLayer;
use super::linear::Linear;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::{Gemma, GemmaConfig};

/// Provides tensors by checkpoint name.
pub trait WeightSource<B: Backend> {
    type Error;

    /// The tensor called `name` (e.g. `model.layers.0.mlp.up_proj.weight`),
    /// which must have exactly `shape`.
    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, Self::Error>;

    /// Whether the source has a tensor called `name` (for optional tensors).
    fn contains(&self, name: &str) -> bool;
}

impl<B: Backend> Gemma<B> {
    /// Builds the model, pulling every parameter from `source`.
    pub fn from_source<S: WeightSource<B>>(
        config: GemmaConfig,
        source: &mut S,
    ) -> Result<Self, S::Error> {
        let hidden = config.hidden_size;
        let embed = source.tensor("model.embed_tokens.weight", [config.vocab_size, hidden])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| decoder_layer(&config, source, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::new(
            source.tensor("model.norm.weight", [hidden])?,
            config.rms_norm_eps,
        );
        let lm_head = if !config.tie_word_embeddings || source.contains("lm_head.weight") {
            Some(source.tensor("lm_head.weight", [config.vocab_size, hidden])?)
        } else {
            None
        };
        Ok(Gemma::new(config, embed, layers, norm, lm_head))
    }
}

fn decoder_layer<B: Backend, S: WeightSource<B>>(
    config: &GemmaConfig,
    source: &mut S,
    prefix: &str,
) -> Result<DecoderLayer<B>, S::Error> {
    let hidden = config.hidden_size;
    let q_width = config.num_attention_heads * config.head_dim;
    let kv_width = config.num_key_value_heads * config.head_dim;
    let inter = config.intermediate_size;
    let mut linear = |name: &str, out: usize, inp: usize| -> Result<Linear<B>, S::Error> {
        Ok(Linear::new(
            source.tensor(&format!("{prefix}.{name}.weight"), [out, inp])?,
        ))
    };
    let shape = HeadShape {
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
    };
    let self_attn = Attention::new(
        linear("self_attn.q_proj", q_width, hidden)?,
        linear("self_attn.k_proj", kv_width, hidden)?,
        linear("self_attn.v_proj", kv_width, hidden)?,
        linear("self_attn.o_proj", hidden, q_width)?,
        shape,
    );
    let mlp = Mlp::new(
        linear("mlp.gate_proj", inter, hidden)?,
        linear("mlp.up_proj", inter, hidden)?,
        linear("mlp.down_proj", hidden, inter)?,
        config.activation,
    );
    let eps = config.rms_norm_eps;
    Ok(DecoderLayer {
        input_layernorm: RmsNorm::new(
            source.tensor(&format!("{prefix}.input_layernorm.weight"), [hidden])?,
            eps,
        ),
        self_attn,
        post_attention_layernorm: RmsNorm::new(
            source.tensor(
                &format!("{prefix}.post_attention_layernorm.weight"),
                [hidden],
            )?,
            eps,
        ),
        mlp,
    })
}

/// transformers' initialisation for a model trained from scratch: matrices
/// from N(0, initializer_range²), RMSNorm offsets at 0 (a scale of 1).
pub struct RandomInit<B: Backend> {
    pub std: f64,
    pub dtype: DType,
    pub device: B::Device,
}

impl<B: Backend> WeightSource<B> for RandomInit<B> {
    type Error = std::convert::Infallible;

    fn tensor<const D: usize>(
        &mut self,
        _name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, Self::Error> {
        let tensor: Tensor<B, D> = if D == 1 {
            Tensor::zeros(shape, &self.device)
        } else {
            Tensor::random(shape, Distribution::Normal(0.0, self.std), &self.device)
        };
        Ok(tensor.cast(self.dtype))
    }

    fn contains(&self, _name: &str) -> bool {
        false
    }
}
