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

/// Keeps freed tensor buffers in the process instead of handing them back to
/// the kernel. A training step allocates and frees the same few-megabyte
/// activation buffers hundreds of times; with glibc's defaults each one above
/// the adaptive mmap threshold (it starts at 128 KiB) is a fresh `mmap`, and the
/// heap top is trimmed after frees, so every step pays page faults and page
/// zeroing again (about 6% of the CPU bench's samples). Peak RSS does not
/// grow: the same buffers are reused. Call once, first thing in `main`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        // glibc's ceiling for the threshold on 64-bit targets (32 MiB).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
