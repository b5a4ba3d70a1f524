//! The DPO objective of TRL 0.7.10 + transformers 4.38: the same forward
//! passes as TRL 1.x (`[chosen; rejected]` through policy and frozen
//! reference), with TRL 0.7.10's loss ([`Trl07Loss`]), its metrics and
//! transformers 4.38's gradient accumulation:
//!
//! * metrics (`DPOTrainer.get_batch_loss_metrics`): `rewards/*`, `logps/*`,
//!   and `logits/chosen|rejected` = the mean of the whole `[pairs, width,
//!   vocab]` logits tensor of that half (prompt and padding included,
//!   `width` the micro-batch's padded width); no `entropy`, no
//!   `mean_token_accuracy`;
//! * each micro-batch loss is divided by `gradient_accumulation_steps`
//!   (accelerate's `backward`), however many micro-batches the step ends up
//!   with.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::loss::Trl07Loss;
use crate::model::gemma::{Gemma, LayerRunner};
use crate::train::TrainBackend;
use crate::train::dpo::PairLogps;
use crate::train::logps::{SequenceLogps, SequenceStats, sequence_logps, sequence_logps_through};
use crate::train::objective::{Metrics, Objective};
use crate::train::preference::{PreferenceBatch, Reference, host, reward_metrics, scalar};

pub struct Trl07DpoObjective<A: AutodiffBackend> {
    pub reference: Reference<A::InnerBackend>,
    pub device: A::Device,
    pub loss: Trl07Loss,
    /// `gradient_accumulation_steps`: every micro-batch loss is divided by it.
    pub accumulation: usize,
}

impl<A: TrainBackend> Objective<A> for Trl07DpoObjective<A> {
    type Batch = PreferenceBatch;

    fn train_loss(
        &mut self,
        policy: &Gemma<A>,
        layers: &dyn LayerRunner<A>,
        batch: &PreferenceBatch,
    ) -> (Tensor<A, 1>, Metrics) {
        let device = self.device.clone();
        let (reference, policy_out) = self.reference.with_policy(batch, &device, || {
            sequence_logps_through(policy, layers, &batch.sequences, &device)
        });
        let reference = Tensor::<A, 1>::from_inner(reference);
        preference_loss(&self.loss, batch, policy_out, reference)
    }

    fn eval_loss(
        &mut self,
        policy: &Gemma<A::InnerBackend>,
        batch: &PreferenceBatch,
    ) -> (f64, Metrics) {
        let reference = self.reference.logps(batch, &self.device);
        let policy_out = sequence_logps(policy, &batch.sequences, &self.device);
        let (loss, metrics) = preference_loss(&self.loss, batch, policy_out, reference);
        (scalar(loss), metrics)
    }

    fn normalizer(&self, _step: &[&PreferenceBatch]) -> f64 {
        self.accumulation.max(1) as f64
    }

    fn tokens(&self, batch: &PreferenceBatch) -> usize {
        batch.sequences.non_pad_tokens()
    }

    fn examples(&self, batch: &PreferenceBatch) -> usize {
        batch.pairs
    }
}

/// Loss and TRL 0.7.10 metrics of one batch (training and evaluation).
pub fn preference_loss<B: Backend>(
    loss: &Trl07Loss,
    batch: &PreferenceBatch,
    policy: SequenceLogps<B>,
    reference: Tensor<B, 1>,
) -> (Tensor<B, 1>, Metrics) {
    let p = batch.pairs;
    let device = reference.device();
    let ones = || Tensor::<B, 1>::from_data(TensorData::new(vec![1f32; p], [p]), &device);
    let logps = PairLogps {
        policy_chosen: policy.sums.clone().narrow(0, 0, p),
        policy_rejected: policy.sums.clone().narrow(0, p, p),
        ref_chosen: reference.clone().narrow(0, 0, p),
        ref_rejected: reference.narrow(0, p, p),
        chosen_tokens: ones(),
        rejected_tokens: ones(),
    };
    let out = loss.compute(&logps);
    let chosen = host(out.chosen_rewards);
    let rejected = host(out.rejected_rewards);
    let sums = host(policy.sums.detach());
    let (chosen_stats, rejected_stats) = policy.stats.split_at(p);
    let width = batch.sequences.width;

    let mut metrics = reward_metrics(&chosen, &rejected, &sums);
    let mut put = |key: &str, value: f64| {
        metrics.insert(key.to_string(), value);
    };
    put("logits/chosen", whole_tensor_mean(chosen_stats, width));
    put("logits/rejected", whole_tensor_mean(rejected_stats, width));
    (out.loss, metrics)
}

/// Mean over `[rows, width, vocab]` from each row's sum over positions of
/// the vocabulary-mean logit.
fn whole_tensor_mean(stats: &[SequenceStats], width: usize) -> f64 {
    let cells = (stats.len() * width).max(1);
    stats.iter().map(|s| s.position_logits_sum).sum::<f64>() / cells as f64
}
