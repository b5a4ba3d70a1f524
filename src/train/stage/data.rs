//! A stage's prepared examples as the loop's micro-batches: the sampler's
//! order per epoch for training, sequential for evaluation, and the
//! collated arrays as the objectives' batches.

use super::SamplePrompt;
use crate::data::{DpoBatch, DpoExample, IGNORE_INDEX, SftBatch, epoch_order, micro_batches};
use crate::recipe::{StageConfig, TrainingArgs};
use crate::train::accounting::EpochBatches;
use crate::train::logps::ScoredBatch;
use crate::train::preference::PreferenceBatch;

/// A stage's prepared examples and how they become micro-batches: the
/// sampler's order per epoch for training, sequential for evaluation.
pub(super) struct StageData<'a, E, Batch> {
    training: &'a TrainingArgs,
    train: &'a [E],
    eval: &'a [E],
    train_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
    eval_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
}

impl<'a, E, Batch> StageData<'a, E, Batch> {
    pub fn new(
        stage: &'a StageConfig,
        train: &'a [E],
        eval: &'a [E],
        train_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
        eval_collate: &'a dyn Fn(&[&E], &[usize]) -> Batch,
    ) -> Self {
        Self {
            training: &stage.training,
            train,
            eval,
            train_collate,
            eval_collate,
        }
    }

    fn batches(
        examples: &[E],
        collate: &dyn Fn(&[&E], &[usize]) -> Batch,
        index_batches: Vec<Vec<usize>>,
    ) -> Vec<Batch> {
        index_batches
            .iter()
            .map(|indices| {
                let picked: Vec<&E> = indices.iter().map(|&i| &examples[i]).collect();
                collate(&picked, indices)
            })
            .collect()
    }

    /// Micro-batches in one training epoch, counted on indices (no collation).
    pub fn micro_batches_per_epoch(&self) -> usize {
        let t = self.training;
        let order: Vec<usize> = (0..self.train.len()).collect();
        micro_batches(
            &order,
            t.per_device_train_batch_size,
            t.dataloader_drop_last,
        )
        .len()
    }

    pub fn eval_batches(&self) -> Vec<Batch> {
        let order: Vec<usize> = (0..self.eval.len()).collect();
        let batch_size = self.training.per_device_eval_batch_size;
        Self::batches(
            self.eval,
            self.eval_collate,
            micro_batches(&order, batch_size, false),
        )
    }
}

impl<E, Batch> EpochBatches<Batch> for StageData<'_, E, Batch> {
    fn epoch(&self, index: usize) -> Vec<Batch> {
        let t = self.training;
        let seed = t.data_seed.unwrap_or(t.seed);
        let order = epoch_order(self.train.len(), t.train_sampling_strategy, seed, index);
        let batches = micro_batches(
            &order,
            t.per_device_train_batch_size,
            t.dataloader_drop_last,
        );
        Self::batches(self.train, self.train_collate, batches)
    }
}

pub(super) fn preference_batch(batch: &DpoBatch) -> PreferenceBatch {
    PreferenceBatch {
        pairs: batch.pairs,
        sequences: ScoredBatch {
            rows: 2 * batch.pairs,
            width: batch.seq_len,
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            scored: batch.completion_mask.iter().map(|&m| m != 0).collect(),
            positions: None,
        },
        reference_logps: None,
    }
}

/// Labels are unshifted (label t is read from logits t−1): position 0 is
/// never predicted.
pub(super) fn sft_batch(batch: &SftBatch) -> ScoredBatch {
    let width = batch.seq_len;
    ScoredBatch {
        rows: batch.rows,
        width,
        input_ids: batch.input_ids.clone(),
        attention_mask: batch.attention_mask.clone(),
        scored: batch
            .labels
            .iter()
            .enumerate()
            .map(|(i, &label)| i % width.max(1) != 0 && label != IGNORE_INDEX)
            .collect(),
        positions: batch.positions.clone(),
    }
}

/// The first eval pair's prompt and chosen answer, for the end-of-run sample.
pub(super) fn sample_prompt(example: &DpoExample) -> Option<SamplePrompt> {
    let messages = example.messages.as_ref()?;
    Some(SamplePrompt {
        prompt: messages.prompt.clone(),
        chosen: messages.chosen.last()?.content.clone(),
    })
}
