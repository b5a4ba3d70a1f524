//! The model's math that is more than one burn op, one file per op:
//! scaled dot-product attention, the gated tanh GELU, Gemma's RMSNorm, the
//! rotary embedding, the bias-free linear product and attention's head
//! transposes. Each file holds the op's math composed from burn ops and
//! its binding to the fused CPU kernel (`align_kernels`) with that
//! kernel's backward.
//!
//! Each op is a backend extension trait, as burn's custom-kernel examples
//! extend `Backend`: the trait's default method is the composed math, and
//! burn's CPU backend overrides it, `Cpu` (Flex) with the fused forward and
//! `CpuTrain` (`Autodiff<Flex>`) with the fused forward recorded as one
//! autodiff node whose backward is the fused backward. Every other backend
//! takes the defaults through the marker `backend::Composed`: burn's CUDA
//! backend and autodiff over it. (Rust has no specialization: a blanket
//! impl for every backend could not be overridden for Flex, so the
//! backends that compose are named instead.) [`GemmaBackend`] is every op
//! at once, the bound of the model's forward passes. On Flex an op whose
//! operands the kernel does not take (bf16 activations, say) runs its
//! composed math too.
//!
//! Why fused kernels on the CPU: on Flex each link of the element-wise
//! chains is a single-threaded scalar pass with its own autodiff node
//! (broadcasting ones walk strided), and Flex's products zero and then copy
//! their outputs on one thread; together that took about a third of the
//! CPU bench's samples while one of the two cores sat idle. With these the
//! CPU step is on par with PyTorch + TRL (`docs/benchmarks.md`, "CPU: where
//! align stands against PyTorch + TRL").
//!
//! Policy and reference stay bit-identical, as TRL's do: `CpuTrain`'s
//! forward is `Cpu`'s kernel, so the policy (`Autodiff<Flex>`) and the
//! frozen reference (`Flex`) compute the same bits.

pub mod attention;
pub mod gelu;
pub mod linear;
pub mod rms_norm;
pub mod rope;
pub mod swap_axes;

pub use attention::AttentionOp;
pub use gelu::GeluTanhGatedOp;
pub use linear::LinearOp;
pub use rms_norm::RmsNormOp;
pub use rope::RopeOp;
pub use swap_axes::SwapMiddleAxesOp;

/// A backend with every op of the model: the one the Gemma's forward
/// passes run on (`Cpu`, `CpuTrain`, and `Cuda`, `CudaTrain` with
/// `--features cuda`).
pub trait GemmaBackend:
    AttentionOp + GeluTanhGatedOp + LinearOp + RmsNormOp + RopeOp + SwapMiddleAxesOp
{
}

impl<B> GemmaBackend for B where
    B: AttentionOp + GeluTanhGatedOp + LinearOp + RmsNormOp + RopeOp + SwapMiddleAxesOp
{
}

#[cfg(test)]
mod tests;
