//! What the training loop needs from a training objective (DPO, SFT): the
//! loss of a micro-batch with its metrics, and how micro-batch losses combine
//! into the loss of an optimizer step. The loop itself (`trainer.rs`) is
//! written once for both.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::model::gemma::{Gemma, LayerRunner};

/// Logged metrics of one micro-batch, by TRL's names (`rewards/chosen`, ...).
pub type Metrics = BTreeMap<String, f64>;

pub trait Objective<A: AutodiffBackend> {
    type Batch;

    /// The loss numerator of one micro-batch (differentiable, shape `[1]`) and
    /// its detached metrics. The step's loss is the sum of the numerators of
    /// its micro-batches divided by [`Objective::normalizer`]. The policy's
    /// forward passes run its decoder layers through `layers`: the plain
    /// loop (`EachLayer`) or the trainer's gradient checkpointing
    /// (`train::recompute`).
    fn train_loss(
        &mut self,
        policy: &Gemma<A>,
        layers: &dyn LayerRunner<A>,
        batch: &Self::Batch,
    ) -> (Tensor<A, 1>, Metrics);

    /// The loss (already normalised for this one batch) and metrics of an
    /// evaluation batch, without a graph.
    fn eval_loss(&mut self, policy: &Gemma<A::InnerBackend>, batch: &Self::Batch)
    -> (f64, Metrics);

    /// Denominator of an optimizer step's loss over its micro-batches: their
    /// number for DPO (TRL divides each micro-batch loss by it), their
    /// predicted-token count for SFT (transformers' `num_items_in_batch`).
    fn normalizer(&self, step: &[&Self::Batch]) -> f64;

    /// Non-padding tokens of a batch, for the cumulative `num_tokens`.
    fn tokens(&self, batch: &Self::Batch) -> usize;

    /// Examples in a batch (pairs for DPO, sequences for SFT): transformers
    /// weights each evaluation batch's loss by it when averaging `eval_loss`.
    fn examples(&self, batch: &Self::Batch) -> usize;
}
