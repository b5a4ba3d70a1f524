//! The DPO objective: one forward of the concatenated `[chosen; rejected]`
//! batch through the policy (with a graph) and through the frozen reference
//! (inner backend, no graph), the loss of `train::dpo`, and TRL 1.x's logged
//! metrics (`rewards/*`, `logps/*`, `logits/*`, `entropy`,
//! `mean_token_accuracy`).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::dpo::{DpoLossSpec, PairLogps, dpo_loss};
use super::logps::{
    ScoredBatch, SequenceLogps, SequenceStats, sequence_logps, sequence_logps_through,
};
use super::objective::{Metrics, Objective};
use super::{LogpsBackend, TrainBackend};
use crate::backend::runs_reference_alongside;
use crate::model::gemma::{Gemma, LayerRunner};

/// `pairs` preference pairs as one batch of `2 × pairs` sequences: rows
/// `0..pairs` are the chosen completions, rows `pairs..2·pairs` the rejected
/// ones (TRL's `concatenated_forward` layout); scored tokens are completions.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceBatch {
    pub pairs: usize,
    pub sequences: ScoredBatch,
    /// With [`Reference::Precomputed`], the reference's sums for the rows of
    /// `sequences`, attached when the batch is collated.
    pub reference_logps: Option<Vec<f32>>,
}

/// Where the reference log-probs come from.
pub enum Reference<B: Backend> {
    /// A frozen model, run on the inner backend without a graph.
    Model(Box<Gemma<B>>),
    /// Scored once before training (`precompute_ref_log_probs`); each batch
    /// carries its values and the model has been freed.
    Precomputed,
}

/// Stack of the reference model's thread (a forward pass is shallow; the
/// default 2 MiB would do, this leaves room).
const REFERENCE_STACK_BYTES: usize = 16 << 20;

pub struct DpoObjective<A: AutodiffBackend> {
    pub spec: DpoLossSpec,
    pub reference: Reference<A::InnerBackend>,
    pub device: A::Device,
}

impl<B: LogpsBackend> Reference<B> {
    /// The reference's log-prob sums of `batch`, and `policy_work`'s result.
    /// On the CPU a reference model runs on a second thread meanwhile: its
    /// forward needs nothing from the policy's, and most of a forward's
    /// element-wise work is single-threaded there, so the two overlap on
    /// two cores. Elsewhere it runs first, on the calling thread
    /// ([`runs_reference_alongside`]).
    pub fn with_policy<T>(
        &self,
        batch: &PreferenceBatch,
        device: &B::Device,
        policy_work: impl FnOnce() -> T,
    ) -> (Tensor<B, 1>, T) {
        if !self.runs_alongside() {
            return (self.logps(batch, device), policy_work());
        }
        std::thread::scope(|scope| {
            let reference = std::thread::Builder::new()
                .name("reference".into())
                .stack_size(REFERENCE_STACK_BYTES)
                .spawn_scoped(scope, || self.logps(batch, device))
                .expect("starting the reference thread");
            let policy = policy_work();
            match reference.join() {
                Ok(reference) => (reference, policy),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Whether the reference's forward gets a thread of its own.
    pub fn runs_alongside(&self) -> bool {
        matches!(self, Reference::Model(_)) && runs_reference_alongside::<B>()
    }

    /// Summed completion log-probs of every row of `batch` under the
    /// frozen reference (or as precomputed).
    pub fn logps(&self, batch: &PreferenceBatch, device: &B::Device) -> Tensor<B, 1> {
        match self {
            Reference::Model(model) => sequence_logps(model, &batch.sequences, device).sums,
            Reference::Precomputed => {
                let values = batch
                    .reference_logps
                    .clone()
                    .expect("precomputed reference log-probs are attached at collation");
                Tensor::from_data(TensorData::new(values, [batch.sequences.rows]), device)
            }
        }
    }
}

impl<A: TrainBackend> Objective<A> for DpoObjective<A> {
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
        preference_loss(&self.spec, batch, policy_out, reference)
    }

    fn eval_loss(
        &mut self,
        policy: &Gemma<A::InnerBackend>,
        batch: &PreferenceBatch,
    ) -> (f64, Metrics) {
        let reference = self.reference.logps(batch, &self.device);
        let policy_out = sequence_logps(policy, &batch.sequences, &self.device);
        let (loss, metrics) = preference_loss(&self.spec, batch, policy_out, reference);
        (scalar(loss), metrics)
    }

    fn normalizer(&self, step: &[&PreferenceBatch]) -> f64 {
        step.len() as f64
    }

    fn tokens(&self, batch: &PreferenceBatch) -> usize {
        batch.sequences.non_pad_tokens()
    }

    fn examples(&self, batch: &PreferenceBatch) -> usize {
        batch.pairs
    }
}

/// Loss and metrics of one batch from policy and reference log-probs; the
/// same code for training (autodiff backend) and evaluation (inner backend).
fn preference_loss<B: Backend>(
    spec: &DpoLossSpec,
    batch: &PreferenceBatch,
    policy: SequenceLogps<B>,
    reference: Tensor<B, 1>,
) -> (Tensor<B, 1>, Metrics) {
    let p = batch.pairs;
    let device = reference.device();
    let counts: Vec<f32> = policy.stats.iter().map(|s| s.tokens as f32).collect();
    let count_tensor = |range: std::ops::Range<usize>| {
        Tensor::<B, 1>::from_data(TensorData::new(counts[range].to_vec(), [p]), &device)
    };
    let logps = PairLogps {
        policy_chosen: policy.sums.clone().narrow(0, 0, p),
        policy_rejected: policy.sums.clone().narrow(0, p, p),
        ref_chosen: reference.clone().narrow(0, 0, p),
        ref_rejected: reference.narrow(0, p, p),
        chosen_tokens: count_tensor(0..p),
        rejected_tokens: count_tensor(p..2 * p),
    };
    let out = dpo_loss(spec, &logps);
    let chosen_rewards = host(out.chosen_rewards);
    let rejected_rewards = host(out.rejected_rewards);
    let policy_sums = host(policy.sums.detach());
    let (chosen_stats, rejected_stats) = policy.stats.split_at(p);

    let mut metrics = reward_metrics(&chosen_rewards, &rejected_rewards, &policy_sums);
    let mut put = |key: &str, value: f64| {
        metrics.insert(key.to_string(), value);
    };
    put(
        "logits/chosen",
        token_mean(chosen_stats, |s| s.mean_logits_sum),
    );
    put(
        "logits/rejected",
        token_mean(rejected_stats, |s| s.mean_logits_sum),
    );
    put("entropy", token_mean(&policy.stats, |s| s.entropy_sum));
    put(
        "mean_token_accuracy",
        token_mean(chosen_stats, |s| s.top1 as f64),
    );
    (out.loss, metrics)
}

/// The metrics every TRL release logs for a DPO batch, from each pair's
/// rewards and the policy's log-prob sums (`[chosen; rejected]`):
/// `rewards/{chosen,rejected,accuracies,margins}`, `logps/{chosen,rejected}`.
pub(crate) fn reward_metrics(chosen: &[f64], rejected: &[f64], policy_sums: &[f64]) -> Metrics {
    let pairs = chosen.len();
    let mut metrics = Metrics::new();
    let mut put = |key: &str, value: f64| {
        metrics.insert(key.to_string(), value);
    };
    put("rewards/chosen", mean(chosen));
    put("rewards/rejected", mean(rejected));
    let accuracies: Vec<f64> = chosen
        .iter()
        .zip(rejected)
        .map(|(c, r)| f64::from(u8::from(c > r)))
        .collect();
    put("rewards/accuracies", mean(&accuracies));
    let margins: Vec<f64> = chosen.iter().zip(rejected).map(|(c, r)| c - r).collect();
    put("rewards/margins", mean(&margins));
    put("logps/chosen", mean(&policy_sums[..pairs]));
    put("logps/rejected", mean(&policy_sums[pairs..]));
    metrics
}

/// Σ value / Σ tokens over sequences: a token-weighted mean.
fn token_mean(stats: &[SequenceStats], value: impl Fn(&SequenceStats) -> f64) -> f64 {
    let tokens: usize = stats.iter().map(|s| s.tokens).sum();
    if tokens == 0 {
        return 0.0;
    }
    stats.iter().map(value).sum::<f64>() / tokens as f64
}

pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

pub(crate) fn host<B: Backend>(tensor: Tensor<B, 1>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 values")
}

pub(crate) fn scalar<B: Backend>(tensor: Tensor<B, 1>) -> f64 {
    host(tensor).first().copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};

    /// Only the CPU backend runs the reference on a second thread; every
    /// other backend (CUDA's fusion backend among them) runs it on the
    /// calling thread, and a precomputed reference runs no forward at all.
    #[test]
    fn only_the_cpu_runs_the_reference_alongside_the_policy() {
        assert!(runs_reference_alongside::<Cpu>());
        assert!(!runs_reference_alongside::<CpuTrain>());
        #[cfg(feature = "cuda")]
        assert!(!runs_reference_alongside::<crate::backend::Cuda>());
        assert!(!Reference::<Cpu>::Precomputed.runs_alongside());
    }
}
