//! Micro-batches as plain arrays: the trainer turns them into tensors, so
//! this module stays free of any backend.
//!
//! DPO (TRL 1.x `DataCollatorForPreference`): `[chosen_1..chosen_B,
//! rejected_1..rejected_B]`, each `prompt + completion` cut to `max_length`,
//! right-padded with `pad_token_id` to the longest of the 2B rows, with an
//! attention mask and a completion mask (0 on prompt and padding).
//! SFT (TRL 1.x `DataCollatorForLanguageModeling`): right-padded
//! `input_ids`, labels padded with -100.
//!
//! Order: `train_sampling_strategy: sequential` walks the rows in dataset
//! order every epoch (transformers' `SequentialSampler`); `random` draws a
//! permutation per epoch from ChaCha8 seeded with `seed` on stream `epoch`
//! (deterministic and resumable, but not torch's permutation).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::recipe::{SamplingStrategy, TruncationMode};

use super::tokenize::dpo::{DpoExample, Side};
use super::tokenize::sft::{IGNORE_INDEX, SftExample};

/// A DPO micro-batch of `pairs` pairs: `2 * pairs` rows of `seq_len`
/// tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpoBatch {
    pub pairs: usize,
    pub seq_len: usize,
    /// `[2 * pairs, seq_len]`: chosen rows first, then rejected rows.
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// 1 on completion tokens the loss scores, 0 on prompt and padding.
    pub completion_mask: Vec<i64>,
    /// Index of each pair in the prepared split.
    pub indices: Vec<usize>,
}

impl DpoBatch {
    /// Collate `examples` (whose positions in the split are `indices`).
    pub fn collate(
        examples: &[&DpoExample],
        indices: &[usize],
        pad_token_id: u32,
        max_length: Option<usize>,
        truncation: TruncationMode,
    ) -> DpoBatch {
        let sequences: Vec<_> = [Side::Chosen, Side::Rejected]
            .iter()
            .flat_map(|side| {
                examples
                    .iter()
                    .map(move |e| e.sequence(*side, max_length, truncation))
            })
            .collect();
        let seq_len = sequences
            .iter()
            .map(|s| s.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut batch = DpoBatch {
            pairs: examples.len(),
            seq_len,
            input_ids: Vec::with_capacity(sequences.len() * seq_len),
            attention_mask: Vec::with_capacity(sequences.len() * seq_len),
            completion_mask: Vec::with_capacity(sequences.len() * seq_len),
            indices: indices.to_vec(),
        };
        for sequence in &sequences {
            let pad = seq_len - sequence.input_ids.len();
            batch.input_ids.extend(padded(
                sequence.input_ids.iter().map(|t| i64::from(*t)),
                pad,
                i64::from(pad_token_id),
            ));
            batch
                .attention_mask
                .extend(padded(sequence.input_ids.iter().map(|_| 1), pad, 0));
            batch.completion_mask.extend(padded(
                sequence.completion_mask.iter().map(|m| i64::from(*m)),
                pad,
                0,
            ));
        }
        batch
    }

    /// `[rows, seq_len]` of every array.
    pub fn shape(&self) -> [usize; 2] {
        [2 * self.pairs, self.seq_len]
    }

    /// Non-padding tokens, prompt included (TRL's `num_tokens`).
    pub fn non_pad_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|m| **m == 1).count()
    }
}

/// An SFT micro-batch: `rows` rows of `seq_len` tokens, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftBatch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// Unshifted labels: the token at each position or -100 (padding and
    /// unscored positions). The loss reads label t+1 at logits t.
    pub labels: Vec<i64>,
    pub indices: Vec<usize>,
    /// Position ids per row when a row packs several conversations (they
    /// restart at each); `None`: `0..seq_len` everywhere.
    pub positions: Option<Vec<Vec<usize>>>,
}

impl SftBatch {
    /// Collate `examples` (whose positions in the split are `indices`).
    pub fn collate(examples: &[&SftExample], indices: &[usize], pad_token_id: u32) -> SftBatch {
        let seq_len = examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0);
        let mut batch = SftBatch {
            rows: examples.len(),
            seq_len,
            input_ids: Vec::with_capacity(examples.len() * seq_len),
            attention_mask: Vec::with_capacity(examples.len() * seq_len),
            labels: Vec::with_capacity(examples.len() * seq_len),
            indices: indices.to_vec(),
            positions: examples.iter().any(|e| !e.documents.is_empty()).then(|| {
                examples
                    .iter()
                    .map(|e| positions(&e.documents, seq_len))
                    .collect()
            }),
        };
        for example in examples {
            let pad = seq_len - example.input_ids.len();
            batch.input_ids.extend(padded(
                example.input_ids.iter().map(|t| i64::from(*t)),
                pad,
                i64::from(pad_token_id),
            ));
            batch
                .attention_mask
                .extend(padded(example.input_ids.iter().map(|_| 1), pad, 0));
            batch
                .labels
                .extend(padded(example.labels.iter().copied(), pad, IGNORE_INDEX));
        }
        batch
    }

    /// `[rows, seq_len]` of every array.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.seq_len]
    }

    /// Tokens the shifted loss predicts: labels at positions 1.. that are
    /// not -100 (transformers' `num_items_in_batch` for this micro-batch).
    pub fn predicted_tokens(&self) -> usize {
        self.labels
            .chunks(self.seq_len.max(1))
            .map(|row| row.iter().skip(1).filter(|l| **l != IGNORE_INDEX).count())
            .sum()
    }
}

/// Positions restarting at each document; padding continues the last one.
fn positions(documents: &[usize], seq_len: usize) -> Vec<usize> {
    let mut out: Vec<usize> = documents.iter().flat_map(|&n| 0..n).collect();
    let next = out.last().map_or(0, |p| p + 1);
    let pad = seq_len.saturating_sub(out.len());
    out.extend(next..next + pad);
    out
}

fn padded<I: Iterator<Item = i64>>(values: I, pad: usize, fill: i64) -> impl Iterator<Item = i64> {
    values.chain(std::iter::repeat_n(fill, pad))
}

/// The order in which an epoch visits the `len` rows of a split.
pub fn epoch_order(len: usize, strategy: SamplingStrategy, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if strategy == SamplingStrategy::Random {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
    }
    order
}

/// Micro-batches of `batch_size` indices in `order`; the last one may be
/// short unless `drop_last` (transformers' `dataloader_drop_last`).
pub fn micro_batches(order: &[usize], batch_size: usize, drop_last: bool) -> Vec<Vec<usize>> {
    order
        .chunks(batch_size.max(1))
        .filter(|chunk| !drop_last || chunk.len() == batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::RowLocation;

    fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> DpoExample {
        DpoExample {
            location: RowLocation {
                dataset: "d".into(),
                split: "train".into(),
                row: 0,
            },
            messages: None,
            prompt_text: String::new(),
            prompt_chosen_text: String::new(),
            prompt_rejected_text: String::new(),
            prompt_ids: prompt.to_vec(),
            chosen_ids: chosen.to_vec(),
            rejected_ids: rejected.to_vec(),
        }
    }

    #[test]
    fn dpo_batch_is_chosen_then_rejected_right_padded() {
        let a = pair(&[2, 5], &[7, 1], &[8, 9, 1]);
        let b = pair(&[2], &[6, 1], &[1]);
        let batch = DpoBatch::collate(&[&a, &b], &[0, 1], 0, None, TruncationMode::KeepStart);
        assert_eq!(batch.shape(), [4, 5]);
        #[rustfmt::skip]
        assert_eq!(batch.input_ids, [
            2, 5, 7, 1, 0,
            2, 6, 1, 0, 0,
            2, 5, 8, 9, 1,
            2, 1, 0, 0, 0,
        ]);
        #[rustfmt::skip]
        assert_eq!(batch.completion_mask, [
            0, 0, 1, 1, 0,
            0, 1, 1, 0, 0,
            0, 0, 1, 1, 1,
            0, 1, 0, 0, 0,
        ]);
        assert_eq!(batch.non_pad_tokens(), 4 + 3 + 5 + 2);
    }

    #[test]
    fn sft_labels_are_padded_with_ignore_index() {
        let example = |ids: &[u32]| SftExample {
            location: RowLocation {
                dataset: "d".into(),
                split: "train".into(),
                row: 0,
            },
            text: String::new(),
            input_ids: ids.to_vec(),
            labels: ids.iter().map(|t| i64::from(*t)).collect(),
            truncated: false,
            full_length: ids.len(),
            documents: Vec::new(),
        };
        let (a, b) = (example(&[2, 3, 4]), example(&[2, 5]));
        let batch = SftBatch::collate(&[&a, &b], &[0, 1], 0);
        assert_eq!(batch.input_ids, [2, 3, 4, 2, 5, 0]);
        assert_eq!(batch.labels, [2, 3, 4, 2, 5, -100]);
        assert_eq!(batch.attention_mask, [1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.predicted_tokens(), 2 + 1);
    }

    #[test]
    fn sequential_order_is_dataset_order_and_random_is_seeded_per_epoch() {
        assert_eq!(
            epoch_order(4, SamplingStrategy::Sequential, 42, 3),
            [0, 1, 2, 3]
        );
        let first = epoch_order(100, SamplingStrategy::Random, 42, 0);
        assert_eq!(first, epoch_order(100, SamplingStrategy::Random, 42, 0));
        assert_ne!(first, epoch_order(100, SamplingStrategy::Random, 42, 1));
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn micro_batches_keep_the_short_tail_unless_dropped() {
        let order = [0, 1, 2, 3, 4];
        assert_eq!(
            micro_batches(&order, 2, false),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(micro_batches(&order, 2, true), vec![vec![0, 1], vec![2, 3]]);
    }
}
