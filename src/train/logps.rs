//! Per-sequence log-probabilities of the scored tokens of a batch, from one
//! forward pass: the quantity both DPO (summed completion log-probs of
//! chosen and rejected) and SFT (token negative log-likelihood) are made of.
//!
//! Token `t` is predicted by the logits at position `t - 1` (the one-token
//! shift of TRL's `labels[:, 1:]` / `logits[:, :-1]`). Only the predicting
//! positions of scored tokens go through the LM head, and they do so in
//! chunks of rows, each upcast to fp32 for the log-softmax: the full
//! `[rows, seq, vocab]` logits are never materialised at once (with Gemma's
//! 256k vocabulary they would be the largest tensor of the step).

use align_kernels::RowStats;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::LogpsBackend;
use crate::model::gemma::{EachLayer, ForwardInput, Gemma, LayerRunner};

/// Upper bound on the logits elements of one chunk (128 MiB in fp32); the
/// memory plan (`plan::memory`) sizes the backward's transient buffers by it.
pub const CHUNK_ELEMENTS: usize = 32 * 1024 * 1024;

/// A right-padded batch and which of its tokens are scored, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredBatch {
    pub rows: usize,
    pub width: usize,
    /// `[rows × width]` token ids (padding included).
    pub input_ids: Vec<i64>,
    /// `[rows × width]`: 1 on tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// `[rows × width]`: token `t` is scored (completion token for DPO, label
    /// for SFT). Position 0 is never scored: nothing predicts it.
    pub scored: Vec<bool>,
    /// Position ids per row for packed rows (restarting per conversation,
    /// which also separates their attention); `None`: `0..width`.
    pub positions: Option<Vec<Vec<usize>>>,
}

impl ScoredBatch {
    /// Number of non-padding tokens (TRL's `num_tokens` counts these).
    pub fn non_pad_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// Number of scored tokens.
    pub fn scored_tokens(&self) -> usize {
        self.scored_positions().count()
    }

    /// `(row, t)` of every scored token, row-major.
    fn scored_positions(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows).flat_map(move |r| {
            (1..self.width)
                .filter(move |&t| self.scored[r * self.width + t])
                .map(move |t| (r, t))
        })
    }
}

/// Detached per-sequence statistics of the scored tokens, for logging.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SequenceStats {
    /// Scored tokens in the sequence.
    pub tokens: usize,
    /// Sum over scored tokens of the mean over the vocabulary of the logits
    /// (TRL 1.x `logits/*` numerators).
    pub mean_logits_sum: f64,
    /// Sum over scored tokens of the predictive entropy.
    pub entropy_sum: f64,
    /// Scored tokens that are the argmax of their logits.
    pub top1: usize,
    /// Sum over every position of the row (prompt and padding included) of
    /// the mean over the vocabulary of the logits: TRL 0.7.10's `logits/*`
    /// is the mean of the whole `[rows, width, vocab]` logits tensor.
    pub position_logits_sum: f64,
}

/// Output of [`sequence_logps`].
#[derive(Clone, Debug)]
pub struct SequenceLogps<B: Backend> {
    /// `[rows]`: summed log-probs of each row's scored tokens (differentiable).
    pub sums: Tensor<B, 1>,
    pub stats: Vec<SequenceStats>,
}

/// One forward of `batch` through `model`, returning summed log-probs of the
/// scored tokens per row and their statistics.
pub fn sequence_logps<B: LogpsBackend>(
    model: &Gemma<B>,
    batch: &ScoredBatch,
    device: &B::Device,
) -> SequenceLogps<B> {
    sequence_logps_through(model, &EachLayer, batch, device)
}

/// [`sequence_logps`] with the model's decoder layers run by `layers`.
pub fn sequence_logps_through<B: LogpsBackend>(
    model: &Gemma<B>,
    layers: &dyn LayerRunner<B>,
    batch: &ScoredBatch,
    device: &B::Device,
) -> SequenceLogps<B> {
    let ScoredBatch { rows, width, .. } = *batch;
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(batch.input_ids.clone(), [rows, width]),
        device,
    );
    let input = ForwardInput {
        input_ids: ids,
        attention_mask: Some(batch.attention_mask.clone()),
        positions: batch.positions.clone(),
    };
    let hidden = model.forward_hidden_through(input, layers);
    let hidden_size = hidden.dims()[2];
    let hidden = hidden.reshape([rows * width, hidden_size]);

    let scored: Vec<(usize, usize)> = batch.scored_positions().collect();
    let mut stats = vec![SequenceStats::default(); rows];
    add_position_logits(&mut stats, model, hidden.clone().detach(), width);
    if scored.is_empty() {
        return SequenceLogps {
            sums: Tensor::zeros([rows], device),
            stats,
        };
    }
    let vocab = model.config().vocab_size;
    let chunk_rows = (CHUNK_ELEMENTS / vocab).max(1);
    let mut picked = Vec::new();
    for chunk in scored.chunks(chunk_rows) {
        let predicting: Vec<i64> = chunk
            .iter()
            .map(|&(r, t)| (r * width + t - 1) as i64)
            .collect();
        let targets: Vec<usize> = chunk
            .iter()
            .map(|&(r, t)| batch.input_ids[r * width + t] as usize)
            .collect();
        let n = chunk.len();
        let positions = Tensor::<B, 1, Int>::from_data(TensorData::new(predicting, [n]), device);
        let logits = model
            .logits(hidden.clone().select(0, positions))
            .cast(DType::F32);
        let (logps, row_stats) = B::token_logps(logits, &targets);
        picked.push(logps);
        add_row_stats(&mut stats, chunk, &row_stats);
    }
    let picked = Tensor::cat(picked, 0);
    let owners: Vec<usize> = scored.iter().map(|&(row, _)| row).collect();
    SequenceLogps {
        sums: B::sum_per_row(picked, &owners, rows),
        stats,
    }
}

/// Every position's vocabulary-mean logit, summed per row (detached).
fn add_position_logits<B: LogpsBackend>(
    stats: &mut [SequenceStats],
    model: &Gemma<B>,
    hidden: Tensor<B, 2>,
    width: usize,
) {
    let means = model
        .mean_logits(hidden)
        .cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 statistics");
    for (row, chunk) in means.chunks(width.max(1)).enumerate() {
        stats[row].position_logits_sum = chunk.iter().map(|&m| f64::from(m)).sum();
    }
}

/// Adds each scored token's row statistics to its sequence's.
fn add_row_stats(stats: &mut [SequenceStats], chunk: &[(usize, usize)], rows: &[RowStats]) {
    for (&(r, _), row) in chunk.iter().zip(rows) {
        let s = &mut stats[r];
        s.tokens += 1;
        s.mean_logits_sum += f64::from(row.mean_logit);
        s.entropy_sum += f64::from(row.entropy);
        s.top1 += usize::from(row.target_is_top);
    }
}
