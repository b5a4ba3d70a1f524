//! The whole Gemma causal language model: token embedding scaled by
//! `sqrt(hidden_size)`, the decoder layers, a final RMSNorm, and the LM head
//! tied to the embedding.
//!
//! `forward_hidden` stops before the LM head on purpose: with Gemma's 256k
//! vocabulary the `[batch, seq, vocab]` logits are the largest tensor of a
//! step, so callers (`train::logps`) apply [`Gemma::logits`] chunk by chunk.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};

use super::GemmaConfig;
use super::attention::{AttentionMask, KeyValues};
use super::block::DecoderLayer;
use super::embedding::Embedding;
use super::linear::Linear;
use super::norm::RmsNorm;
use super::ops::GemmaBackend;
use super::rope::{Rope, RopeTable, TableShape};

/// Inputs of one forward pass.
#[derive(Clone, Debug)]
pub struct ForwardInput<B: Backend> {
    /// `[batch, seq]` token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]` row-major on the host, 1 = token, 0 = padding.
    /// `None`: no padding. The mask is built on the host
    /// (`AttentionMask::causal`), so it never goes to the device and back.
    pub attention_mask: Option<Vec<i64>>,
    /// Position ids per row; `None`: `0..seq` for every row (right padding).
    pub positions: Option<Vec<Vec<usize>>>,
}

impl<B: Backend> ForwardInput<B> {
    pub fn new(input_ids: Tensor<B, 2, Int>, attention_mask: Option<Vec<i64>>) -> Self {
        Self {
            input_ids,
            attention_mask,
            positions: None,
        }
    }
}

/// Keys and values of every layer for the positions generated so far.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<Option<KeyValues<B>>>,
    /// Positions cached.
    pub len: usize,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
        }
    }
}

#[derive(Module, Debug)]
pub struct Gemma<B: Backend> {
    /// `[vocab, hidden]`; also the LM head (tied).
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// Untied LM head `[vocab, hidden]` (Gemma v1 always ties; kept for completeness).
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    config: GemmaConfig,
    #[module(skip)]
    rope: Rope,
}

/// How a forward pass runs the decoder layers, chosen by its caller:
/// [`EachLayer`], the plain loop, or the trainer's per-layer gradient
/// checkpointing (`train::recompute`), which runs them without a graph and
/// keeps their inputs.
pub trait LayerRunner<B: Backend> {
    fn run(
        &self,
        layers: &[DecoderLayer<B>],
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3>;
}

/// The plain loop: each layer's output is the next one's input.
pub struct EachLayer;

impl<B: GemmaBackend> LayerRunner<B> for EachLayer {
    fn run(
        &self,
        layers: &[DecoderLayer<B>],
        mut x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        for layer in layers {
            x = layer.forward(x, rope, mask);
        }
        x
    }
}

impl<B: Backend> Gemma<B> {
    pub fn new(
        config: GemmaConfig,
        embed_tokens: Tensor<B, 2>,
        layers: Vec<DecoderLayer<B>>,
        norm: RmsNorm<B>,
        lm_head: Option<Tensor<B, 2>>,
    ) -> Self {
        let rope = Rope::new(config.head_dim, config.rope_theta);
        Self {
            embed_tokens: Embedding::new(embed_tokens),
            layers,
            norm,
            lm_head: lm_head.map(Linear::new),
            config,
            rope,
        }
    }

    pub fn config(&self) -> &GemmaConfig {
        &self.config
    }

    /// The dtype of the activations (that of the embedding weights).
    pub fn dtype(&self) -> DType {
        self.embed_tokens.weight.val().dtype()
    }
}

impl<B: GemmaBackend> Gemma<B> {
    /// Final-norm hidden states `[batch, seq, hidden]` for every position.
    pub fn forward_hidden(&self, input: ForwardInput<B>) -> Tensor<B, 3> {
        self.forward_hidden_through(input, &EachLayer)
    }

    /// [`Gemma::forward_hidden`] with the decoder layers run by `layers`.
    pub fn forward_hidden_through(
        &self,
        input: ForwardInput<B>,
        layers: &dyn LayerRunner<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input.input_ids.dims();
        let device = input.input_ids.device();
        let dtype = self.dtype();
        let shape = self.table_shape(batch);
        let rope: RopeTable<B> = match &input.positions {
            Some(rows) => self.rope.table(rows, shape, dtype, &device),
            None => self.rope.table_for_length(seq, shape, dtype, &device),
        };
        let mut mask = AttentionMask::causal(input.attention_mask.as_deref(), batch, seq, &device);
        if let Some(rows) = &input.positions {
            mask = mask.within_documents(rows, &device);
        }
        let mask = mask.for_heads(self.config.num_attention_heads);
        let x = self.embed_tokens.forward(input.input_ids) * self.embedding_scale(dtype);
        let x = layers.run(&self.layers, x, &rope, &mask);
        self.norm.forward(x)
    }

    /// LM-head logits `[rows, vocab]` for hidden states `[rows, hidden]`, in the
    /// activation dtype (callers upcast chunks to fp32 as needed).
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = match &self.lm_head {
            Some(linear) => linear.weight.val(),
            None => self.embed_tokens.weight.val(),
        };
        B::bias_free_linear(hidden, head)
    }

    /// Mean over the vocabulary of the logits of hidden states `[rows,
    /// hidden]`, shape `[rows]`, without forming the logits: the head is
    /// linear, so `mean_v(h·w_v) = h·mean_v(w_v)`.
    pub fn mean_logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 1> {
        let head = match &self.lm_head {
            Some(linear) => linear.weight.val(),
            None => self.embed_tokens.weight.val(),
        };
        let rows = hidden.dims()[0];
        let mean_row = head.mean_dim(0); // [1, hidden]
        hidden.matmul(mean_row.transpose()).reshape([rows])
    }

    /// Generation step: runs the `[1, new]` tokens that follow the cached
    /// positions, extends `cache`, and returns the logits of the last one
    /// (`[1, vocab]`). Same arithmetic as [`Gemma::forward`] on the whole
    /// sequence, without recomputing the past.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 2> {
        let [batch, new] = input_ids.dims();
        assert_eq!(batch, 1, "generation runs one sequence at a time");
        let device = input_ids.device();
        let dtype = self.dtype();
        let past = cache.len;
        let positions = vec![(past..past + new).collect::<Vec<_>>()];
        let rope = self
            .rope
            .table(&positions, self.table_shape(1), dtype, &device);
        let mask = AttentionMask::after(past, new, &device);
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let mut x = self.embed_tokens.forward(input_ids) * self.embedding_scale(dtype);
        for (layer, entry) in self.layers.iter().zip(&mut cache.layers) {
            x = layer.forward_cached(x, &rope, &mask, entry);
        }
        cache.len += new;
        let last = self.norm.forward(x).narrow(1, new - 1, 1);
        let width = last.dims()[2];
        self.logits(last.reshape([1, width]))
    }

    /// Full logits `[batch, seq, vocab]`: for small models, tests and generation.
    pub fn forward(&self, input: ForwardInput<B>) -> Tensor<B, 3> {
        let hidden = self.forward_hidden(input);
        let [batch, seq, width] = hidden.dims();
        let logits = self.logits(hidden.reshape([batch * seq, width]));
        let vocab = logits.dims()[1];
        logits.reshape([batch, seq, vocab])
    }

    /// The projections a forward pass of `batch` rows rotates.
    fn table_shape(&self, batch: usize) -> TableShape {
        TableShape {
            batch,
            query_heads: self.config.num_attention_heads,
            kv_heads: self.config.num_key_value_heads,
        }
    }

    /// `sqrt(hidden_size)`, rounded to the activation dtype first as
    /// transformers does (`torch.tensor(hidden_size**0.5, dtype=hidden.dtype)`).
    fn embedding_scale(&self, dtype: DType) -> f64 {
        let scale = (self.config.hidden_size as f64).sqrt();
        match dtype {
            DType::BF16 => half::bf16::from_f64(scale).to_f64(),
            DType::F16 => half::f16::from_f64(scale).to_f64(),
            DType::F32 => scale as f32 as f64,
            _ => scale,
        }
    }
}
