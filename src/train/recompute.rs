//! Per-decoder-layer gradient checkpointing (`gradient_checkpointing:
//! true`), as transformers does it: the forward pass runs the decoder
//! layers without a graph, keeping only each layer's input; the backward
//! recomputes one layer at a time, with its graph, from that input and the
//! gradient of its output, then drops it. Activations held at the peak are
//! the `L` layer inputs plus one layer's graph (`plan::memory`), where
//! burn's own `BalancedCheckpointing` keeps every matmul, cast and
//! reduction output of every layer.
//!
//! [`LayerRecompute`] is a `LayerRunner`: the trainer hands it to the
//! objective, whose forward passes of the policy run their decoder layers
//! through it (`Gemma::forward_hidden_through`) and get the last layer's
//! output as a fresh leaf, so the loss's backward stops there. The model
//! itself knows nothing of it. [`LayerRecompute::backward`] then carries
//! the leaf's gradient down the layers and into the embedding. Each
//! layer's backward is the one of the plain graph, fed the same gradient,
//! so the gradients are those without checkpointing (checked bit for bit
//! in `tests/gradient_checkpointing.rs`).

use std::sync::{Arc, Mutex};

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::TrainBackend;
use crate::model::gemma::attention::AttentionMask;
use crate::model::gemma::block::DecoderLayer;
use crate::model::gemma::rope::RopeTable;
use crate::model::gemma::{Gemma, LayerRunner};

/// What one forward pass leaves for its backward.
struct Tape<A: AutodiffBackend> {
    /// The scaled embedding (with its graph into the embedding weights).
    embedded: Tensor<A, 3>,
    /// Each layer's input, without a graph.
    inputs: Vec<Tensor<A::InnerBackend, 3>>,
    /// The last layer's output as a leaf: the loss's backward ends there.
    output: Tensor<A, 3>,
    rope: RopeTable<A>,
    mask: AttentionMask<A>,
}

/// The runner a checkpointed policy's forward passes go through, and the
/// tapes they leave.
pub struct LayerRecompute<A: AutodiffBackend> {
    tapes: Mutex<Vec<Tape<A>>>,
}

impl<A: AutodiffBackend> Default for LayerRecompute<A> {
    fn default() -> Self {
        Self {
            tapes: Mutex::new(Vec::new()),
        }
    }
}

impl<A: TrainBackend> LayerRecompute<A> {
    /// A new recompute for `model`'s training, and the model, unchanged:
    /// the recompute goes to the trainer (`Trainer::recompute`), which runs
    /// the model's forward passes through it.
    pub fn install(model: Gemma<A>) -> (Gemma<A>, Arc<Self>) {
        (model, Arc::new(Self::default()))
    }

    /// The parameters' gradients of the loss whose backward gave `grads`:
    /// those the backward reached (the final norm, the LM head) plus, for
    /// each forward pass recorded since the last call, the layers' and the
    /// embedding's, recomputed layer by layer from the top.
    pub fn backward(&self, model: &Gemma<A>, grads: A::Gradients) -> GradientsParams {
        let tapes = std::mem::take(&mut *self.tapes.lock().unwrap_or_else(|p| p.into_inner()));
        // A tape of a forward whose loss is not this one (it failed before
        // its backward) has no gradient here and is dropped.
        let outputs: Vec<_> = tapes.iter().map(|tape| tape.output.grad(&grads)).collect();
        let mut total = GradientsAccumulator::<Gemma<A>>::new();
        total.accumulate(model, GradientsParams::from_grads(grads, model));
        for (tape, grad) in tapes.into_iter().zip(outputs) {
            let Some(mut grad) = grad else {
                continue;
            };
            for (layer, input) in model.layers.iter().zip(tape.inputs).rev() {
                let input = Tensor::<A, 3>::from_inner(input).require_grad();
                let output = layer.forward(input.clone(), &tape.rope, &tape.mask);
                let layer_grads = (output * Tensor::from_inner(grad)).sum().backward();
                grad = input
                    .grad(&layer_grads)
                    .expect("a layer's output depends on its input");
                total.accumulate(model, GradientsParams::from_grads(layer_grads, model));
            }
            let embedding_grads = (tape.embedded * Tensor::from_inner(grad)).sum().backward();
            total.accumulate(model, GradientsParams::from_grads(embedding_grads, model));
        }
        total.grads()
    }
}

impl<A: TrainBackend> LayerRunner<A> for LayerRecompute<A> {
    fn run(
        &self,
        layers: &[DecoderLayer<A>],
        x: Tensor<A, 3>,
        rope: &RopeTable<A>,
        mask: &AttentionMask<A>,
    ) -> Tensor<A, 3> {
        let (inner_rope, inner_mask) = (rope.inner(), mask.inner());
        let mut inputs = Vec::with_capacity(layers.len());
        let mut hidden = x.clone().inner();
        for layer in layers {
            inputs.push(hidden.clone());
            hidden = layer.valid().forward(hidden, &inner_rope, &inner_mask);
        }
        let output = Tensor::<A, 3>::from_inner(hidden).require_grad();
        let tape = Tape {
            embedded: x,
            inputs,
            output: output.clone(),
            rope: rope.clone(),
            mask: mask.clone(),
        };
        self.tapes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tape);
        output
    }
}
