//! The SFT objective: causal-LM negative log-likelihood of the labelled
//! tokens. With gradient accumulation the loss of an optimizer step is the
//! NLL summed over all its micro-batches divided by their number of
//! predicted tokens, as transformers does when it passes
//! `num_items_in_batch` (it does not divide by the accumulation count).
//! Metrics as TRL 1.x's `SFTTrainer`: `entropy` and `mean_token_accuracy`
//! over the predicted tokens of each micro-batch.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::TrainBackend;
use super::logps::{ScoredBatch, SequenceLogps, sequence_logps, sequence_logps_through};
use super::objective::{Metrics, Objective};
use super::preference::scalar;
use crate::model::gemma::{Gemma, LayerRunner};

/// A right-padded batch of conversations; `scored` marks the label tokens
/// (labels ≠ -100).
pub type SftBatch = ScoredBatch;

pub struct SftObjective<B: Backend> {
    pub device: B::Device,
}

impl<A: TrainBackend> Objective<A> for SftObjective<A> {
    type Batch = SftBatch;

    fn train_loss(
        &mut self,
        policy: &Gemma<A>,
        layers: &dyn LayerRunner<A>,
        batch: &SftBatch,
    ) -> (Tensor<A, 1>, Metrics) {
        let out = sequence_logps_through(policy, layers, batch, &self.device);
        let metrics = token_metrics(&out);
        (out.sums.sum().neg(), metrics)
    }

    fn eval_loss(&mut self, policy: &Gemma<A::InnerBackend>, batch: &SftBatch) -> (f64, Metrics) {
        let out = sequence_logps(policy, batch, &self.device);
        let metrics = token_metrics(&out);
        let tokens = batch.scored_tokens().max(1) as f64;
        (-scalar(out.sums.sum()) / tokens, metrics)
    }

    fn normalizer(&self, step: &[&SftBatch]) -> f64 {
        step.iter().map(|b| b.scored_tokens()).sum::<usize>().max(1) as f64
    }

    fn tokens(&self, batch: &SftBatch) -> usize {
        batch.non_pad_tokens()
    }

    fn examples(&self, batch: &SftBatch) -> usize {
        batch.rows
    }
}

fn token_metrics<B: Backend>(out: &SequenceLogps<B>) -> Metrics {
    let tokens: usize = out.stats.iter().map(|s| s.tokens).sum();
    let per_token = |sum: f64| {
        if tokens == 0 {
            0.0
        } else {
            sum / tokens as f64
        }
    };
    let mut metrics = Metrics::new();
    metrics.insert(
        "entropy".into(),
        per_token(out.stats.iter().map(|s| s.entropy_sum).sum()),
    );
    metrics.insert(
        "mean_token_accuracy".into(),
        per_token(out.stats.iter().map(|s| s.top1 as f64).sum()),
    );
    metrics
}
