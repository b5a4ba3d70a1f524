//! What training asks of a backend beyond burn's traits: the model's ops
//! (`model::gemma::GemmaBackend`) and the token log-probs
//! and their sums per sequence (`train::token_logps`,
//! `train::sequence_sums`) wherever sequences are scored, on the autodiff
//! backend the policy trains on and on the inner backend its evaluation
//! and the frozen reference run on, and the AdamW update
//! (`train::adamw_update`) on the inner backend. Each op is fused on the
//! CPU and composed from burn ops elsewhere (`model::gemma::ops` says how);
//! the bounds hold for `Cpu`/`CpuTrain` and, with `--features cuda`,
//! `Cuda`/`CudaTrain`.

use burn::tensor::backend::AutodiffBackend;

use super::adamw_update::AdamWUpdateOp;
use super::sequence_sums::SequenceSumOp;
use super::token_logps::TokenLogpsOp;
use crate::model::gemma::GemmaBackend;

/// A backend sequences are scored on (`train::logps`).
pub trait LogpsBackend: GemmaBackend + TokenLogpsOp + SequenceSumOp {}

impl<B: GemmaBackend + TokenLogpsOp + SequenceSumOp> LogpsBackend for B {}

/// An autodiff backend the trainer runs on.
pub trait TrainBackend:
    AutodiffBackend<InnerBackend: LogpsBackend + AdamWUpdateOp> + LogpsBackend
{
}

impl<A> TrainBackend for A
where
    A: AutodiffBackend + LogpsBackend,
    A::InnerBackend: LogpsBackend + AdamWUpdateOp,
{
}
