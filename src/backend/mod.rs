//! The one place that names concrete burn backends. Everything else is generic
//! over `B: Backend` or the extension traits on it (`model::gemma::GemmaBackend`
//! for the model, `train::TrainBackend` for training) and picks its types from
//! here. `flex` is what the bindings of align's fused CPU kernels to burn's CPU
//! backend share (each op's own binding is in the op's file).

use burn::backend::Autodiff;
pub use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;

pub mod flex;
#[cfg(test)]
pub mod testing;

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

/// Whether the frozen reference's forward should run on a thread of its
/// own beside the policy's. On the CPU it overlaps two cores (most of a
/// forward's element-wise work is single-threaded there). On a GPU backend
/// it must not: work is queued asynchronously anyway, cubecl gives every
/// new thread a stream of its own whose memory pools are never freed, and
/// burn-fusion 0.21 handles shared between threads are the pattern behind
/// its "Should have handle for tensor" panics.
pub fn runs_reference_alongside<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Cpu>()
}

/// The backends whose extension ops (`model::gemma::ops`,
/// `train::adamw_update`, `train::token_logps`) are their default methods,
/// the math composed from burn ops: every backend but Flex, which runs
/// align's fused kernels instead. Rust has no specialization, so "every
/// backend but Flex" cannot be one blanket impl that Flex overrides; each
/// op is implemented for the backends named here and, separately, for
/// `Cpu` and `CpuTrain`.
pub trait Composed: Backend {}

#[cfg(feature = "cuda")]
impl Composed for Cuda {}

/// Autodiff over a composed backend records the composed ops.
impl<B: Composed, C: CheckpointStrategy> Composed for Autodiff<B, C> {}

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

/// Splits the machine's cores among `replicas` CPU replicas: Flex runs its
/// matmuls on rayon's global pool and most element-wise work on the calling
/// thread, so with two replicas on two cores a pool of two threads only adds
/// workers that spin against the replicas (bench: 1.72 -> 1.54 s/step with a
/// pool of one). Must run before anything uses rayon; if something already
/// has, the pool stays as it is, which costs speed, never correctness.
pub fn share_cores_among_replicas(replicas: usize) {
    if replicas < 2 {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / replicas).max(1);
    if rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .is_err()
    {
        eprintln!("warning: rayon's pool was already started; {replicas} CPU replicas share it");
    }
}
