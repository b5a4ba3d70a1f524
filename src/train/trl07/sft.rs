//! The SFT objective of TRL 0.7.10 + transformers 4.38 on packed sequences:
//! each micro-batch's loss is the causal-LM cross entropy averaged over its
//! own `rows × (width − 1)` predicted tokens (transformers'
//! `CrossEntropyLoss` mean), divided by `gradient_accumulation_steps`
//! whatever the step holds. `SFTTrainer` 0.7.10 logs no metric of its own.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::model::gemma::{Gemma, LayerRunner};
use crate::train::TrainBackend;
use crate::train::logps::{ScoredBatch, sequence_logps, sequence_logps_through};
use crate::train::objective::{Metrics, Objective};
use crate::train::preference::scalar;

pub struct Trl07SftObjective<B: Backend> {
    pub device: B::Device,
    /// `gradient_accumulation_steps`: every micro-batch loss is divided by it.
    pub accumulation: usize,
}

impl<A: TrainBackend> Objective<A> for Trl07SftObjective<A> {
    type Batch = ScoredBatch;

    fn train_loss(
        &mut self,
        policy: &Gemma<A>,
        layers: &dyn LayerRunner<A>,
        batch: &ScoredBatch,
    ) -> (Tensor<A, 1>, Metrics) {
        let out = sequence_logps_through(policy, layers, batch, &self.device);
        let tokens = batch.scored_tokens().max(1) as f64;
        (out.sums.sum().neg().div_scalar(tokens), Metrics::new())
    }

    fn eval_loss(
        &mut self,
        policy: &Gemma<A::InnerBackend>,
        batch: &ScoredBatch,
    ) -> (f64, Metrics) {
        let out = sequence_logps(policy, batch, &self.device);
        let tokens = batch.scored_tokens().max(1) as f64;
        (-scalar(out.sums.sum()) / tokens, Metrics::new())
    }

    fn normalizer(&self, _step: &[&ScoredBatch]) -> f64 {
        self.accumulation.max(1) as f64
    }

    fn tokens(&self, batch: &ScoredBatch) -> usize {
        batch.non_pad_tokens()
    }

    fn examples(&self, batch: &ScoredBatch) -> usize {
        batch.rows
    }
}
