//! The one place that names concrete burn backends. Everything else is generic
//! over `B: Backend` (or `B: AutodiffBackend` for training) and picks its types
//! from here.

use burn::backend::Autodiff;
pub use burn::tensor::backend::{AutodiffBackend, Backend};

/// burn's pure-Rust CPU backend: the default, used by tests and the small run.
pub type Cpu = burn::backend::Flex;

/// CPU backend with reverse-mode autodiff, for training on the CPU.
pub type CpuTrain = Autodiff<Cpu>;

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
