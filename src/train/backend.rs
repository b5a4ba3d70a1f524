//! What training asks of a backend beyond burn's traits: the model's ops
//! (`model::gemma::GemmaBackend`) wherever sequences are scored, on the
//! autodiff backend the policy trains on and on the inner backend its
//! evaluation and the frozen reference run on. Each op is fused on the CPU
//! and composed from burn ops elsewhere (`model::gemma::ops`); the bounds
//! hold for `Cpu`/`CpuTrain` and, with `--features cuda`, `Cuda`/`CudaTrain`.

use burn::tensor::backend::AutodiffBackend;

use crate::model::gemma::GemmaBackend;

/// A backend sequences are scored on (`train::logps`).
pub trait LogpsBackend: GemmaBackend {}

impl<B: GemmaBackend> LogpsBackend for B {}

/// An autodiff backend the trainer runs on.
pub trait TrainBackend: AutodiffBackend<InnerBackend: LogpsBackend> + LogpsBackend {}

impl<A> TrainBackend for A
where
    A: AutodiffBackend + LogpsBackend,
    A::InnerBackend: LogpsBackend,
{
}
