//! The one place that names concrete burn backends. Everything else is generic
//! over `B: Backend` (or `B: AutodiffBackend` for training) and picks its types
//! from here.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
pub use burn::tensor::backend::{AutodiffBackend, Backend};

/// A training backend, and the same backend with burn-autodiff's balanced
/// checkpointing, which a stage with `gradient_checkpointing: true` runs on
/// (`train::run` picks one per stage).
///
/// What burn 0.21 checkpoints: each autodiff op declares itself
/// memory-bound (element-wise arithmetic, exp/tanh/erf/sqrt, reshape,
/// permute, slice, select, repeat) or compute-bound (matmul, gather, casts,
/// mask_fill, sums and means, cumulative ops). Under `BalancedCheckpointing`
/// the output of a memory-bound op is not kept for the backward but
/// recomputed from its inputs when needed, while compute-bound outputs are
/// kept as without checkpointing. That is not transformers' per-decoder-layer
/// recomputation: matmul outputs (q, k, v, scores, MLP projections) stay in
/// memory; what goes is chains of element-wise temporaries (RMSNorm's and
/// the tanh GELU's pieces, rotary's products, the residual sums). The
/// recomputation is the same arithmetic, so gradients are bit for bit those
/// without it (`tests/gradient_checkpointing.rs`).
pub trait TrainBackend: AutodiffBackend {
    type Checkpointed: AutodiffBackend<InnerBackend = Self::InnerBackend, Device = Self::Device>;
}

impl<B: Backend> TrainBackend for Autodiff<B>
where
    Autodiff<B>: AutodiffBackend<InnerBackend = B, Device = B::Device>,
    Autodiff<B, BalancedCheckpointing>: AutodiffBackend<InnerBackend = B, Device = B::Device>,
{
    type Checkpointed = Autodiff<B, BalancedCheckpointing>;
}

/// burn's pure-Rust CPU backend: the default, used by tests and the small run.
pub type Cpu = burn::backend::Flex;

/// CPU backend with reverse-mode autodiff, for training on the CPU.
pub type CpuTrain = Autodiff<Cpu>;

/// [`CpuTrain`] with burn-autodiff's balanced checkpointing.
pub type CpuTrainCheckpointed = <CpuTrain as TrainBackend>::Checkpointed;

/// burn's CUDA backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// CUDA backend with autodiff (feature `cuda`).
#[cfg(feature = "cuda")]
pub type CudaTrain = Autodiff<Cuda>;

/// The device of the CPU backend (there is only one).
pub fn cpu_device() -> burn::tensor::Device<Cpu> {
    Default::default()
}
