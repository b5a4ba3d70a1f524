//! align's fused CPU kernels: plain functions on `f32` slices, each one pass
//! over its data, split over rayon's pool.
//!
//! Why a crate of its own: the training step's element-wise hot spots (the
//! attention softmax, the MLP's gated GELU, the RMSNorm, the rotary
//! embedding, the token log-probs, the AdamW update) cost more on burn's CPU
//! backend than their share of the FLOPs suggests, because each is a chain
//! of single-threaded scalar ops plus autodiff bookkeeping for every link;
//! its products pay for an extra copy of each output and a transposed
//! weight gradient, and causal attention for the masked half of its
//! scores. These kernels do each in one pass, forward and backward;
//! `align::model::gemma::ops` (and `align::train`'s `token_logps` and
//! `adamw_update`) plug them into burn. Kept apart so that the dev
//! profile can build them with full optimisation (loop vectorisation needs
//! `opt-level = 3`) while the main crate builds fast.

mod adamw;
mod attention;
mod exp;
mod gelu;
mod lanes;
mod matmul;
mod permute;
mod rms_norm;
mod rope;
mod softmax;
mod token_logps;

use std::mem::MaybeUninit;

use rayon::prelude::*;

pub use adamw::{AdamWScalars, adamw};
pub use attention::{AttentionShape, attention, attention_backward};
pub use exp::exp;
pub use gelu::{gelu_tanh_gated, gelu_tanh_gated_backward};
pub use matmul::{linear, linear_backward};
pub use permute::{gather_strided, swap_middle_axes};
pub use rms_norm::{rms_norm, rms_norm_backward};
pub use rope::{RopeShape, rope, rope_backward};
pub use token_logps::{RowStats, TokenLogps, token_logps, token_logps_backward};

/// Elements one rayon task handles: large enough that scheduling is noise,
/// small enough that both cores get many tasks.
const TASK_ELEMENTS: usize = 1 << 15;

/// A zeroed buffer, zeroed on every core of rayon's pool, a memset per
/// task: for outputs that are added to (a single-threaded `vec![0.0; n]`
/// per output was a fifth of the serial time left on the CPU bench).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    let mut out = Output::new(len);
    out.slots()
        .par_chunks_mut(TASK_ELEMENTS)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(0.0)));
    // SAFETY: the chunks cover every slot, and each was filled.
    unsafe { out.written() }
}

/// A kernel's output of `len` elements, handed out uninitialised
/// ([`Output::slots`]) for the kernel to write, every element of it, then
/// taken as a `Vec` ([`Output::written`]). Outputs are not zeroed first:
/// that was memory bandwidth spent for nothing (5% of the CPU bench's
/// samples).
pub(crate) struct Output {
    buffer: Vec<f32>,
    len: usize,
}

impl Output {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            buffer: Vec::with_capacity(len),
            len,
        }
    }

    pub(crate) fn slots(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.buffer.spare_capacity_mut()[..self.len]
    }

    /// The written output.
    ///
    /// # Safety
    /// Every slot has been written.
    pub(crate) unsafe fn written(mut self) -> Vec<f32> {
        // SAFETY: the capacity is at least `len`, and the caller vouches
        // that all `len` slots are initialised.
        unsafe { self.buffer.set_len(self.len) };
        self.buffer
    }
}

/// The environment variable that caps the instruction set of the CPU
/// kernels: [`CpuKernels`].
pub const CPU_KERNELS_VAR: &str = "ALIGN_CPU_KERNELS";

/// Which code the CPU kernels run, from `ALIGN_CPU_KERNELS`, read once.
///
/// Float sums rounded in another order give other bits, and a small model
/// trained from scratch carries a one-ulp difference into another run. The
/// matrix products are where the instruction set changes the order: gemm's
/// AVX2 microkernels fuse each multiply-add (one rounding), its baseline
/// ones round the product and then the sum. This switch forces the narrower
/// path on a CPU that has the wider one, so that a result can be checked
/// the way it would come out on another CPU:
///
/// * `native` (the default, also when unset or empty): the widest code
///   built in that the CPU runs. For gemm (built without its `x86-v4`
///   feature) and these kernels that is AVX2 + FMA; burn's own element-wise
///   and reduction loops (macerator) also use AVX-512 where the CPU has it,
///   which this switch does not reach.
/// * `avx2`: at most AVX2 + FMA (on an x86-64 CPU without them, the baseline).
///   The same code as `native` in this build.
/// * `baseline`: x86-64's SSE2 baseline: gemm's scalar microkernels (a
///   separate multiply and add) and these kernels as compiled for any
///   x86-64 CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernels {
    Native,
    Avx2,
    Baseline,
}

impl CpuKernels {
    /// Parses a value of `ALIGN_CPU_KERNELS` (case-insensitive; empty = `native`).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "native" => Ok(Self::Native),
            "avx2" => Ok(Self::Avx2),
            "baseline" => Ok(Self::Baseline),
            other => Err(format!(
                "{CPU_KERNELS_VAR}={other}: expected native, avx2 or baseline"
            )),
        }
    }

    /// The value of `ALIGN_CPU_KERNELS` (unset = `native`).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(CPU_KERNELS_VAR) {
            Ok(value) => Self::parse(&value),
            Err(std::env::VarError::NotPresent) => Ok(Self::Native),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{CPU_KERNELS_VAR}: not valid UTF-8"))
            }
        }
    }

    /// The instruction set the kernels and gemm actually run with this
    /// setting on this CPU: `"avx2+fma"` or `"baseline"`.
    pub fn in_use(self) -> &'static str {
        if self != Self::Baseline && avx2_fma_detected() {
            "avx2+fma"
        } else {
            "baseline"
        }
    }
}

/// The setting of `ALIGN_CPU_KERNELS`, read on the first call and kept.
///
/// # Panics
/// On a value other than `native`, `avx2` or `baseline` (a binary that
/// wants to say so sooner calls [`CpuKernels::from_env`] first).
pub fn cpu_kernels() -> CpuKernels {
    static CHOSEN: std::sync::OnceLock<CpuKernels> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| CpuKernels::from_env().unwrap_or_else(|error| panic!("{error}")))
}

fn avx2_fma_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the kernels and gemm may take their AVX2 + FMA path.
pub(crate) fn use_avx2_fma() -> bool {
    static USE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USE.get_or_init(|| cpu_kernels().in_use() == "avx2+fma")
}

/// Runs `kernel` compiled for AVX2 and FMA where the CPU has them (and
/// `ALIGN_CPU_KERNELS` is not `baseline`), else as built: x86-64's SSE2
/// baseline, so that one binary runs on any x86-64 CPU.
/// The element-wise loops then vectorise twice as wide. `kernel` must be an
/// `#[inline(always)]` closure (and what it calls inlined too): code is
/// compiled for AVX2 only where it is inlined into the wrapper. The results are the
/// same bits either way: the loops' operations and their order do not
/// depend on the width (no `mul_add`, and Rust never fuses a multiply and an
/// add on its own).
#[inline(always)]
pub(crate) fn wide<R>(kernel: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: the CPU has both features (`use_avx2_fma` checked them).
        return unsafe { with_avx2_fma(kernel) };
    }
    kernel()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2_fma<R>(kernel: impl FnOnce() -> R) -> R {
    kernel()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_kernels_values() {
        assert_eq!(CpuKernels::parse(""), Ok(CpuKernels::Native));
        assert_eq!(CpuKernels::parse("Native"), Ok(CpuKernels::Native));
        assert_eq!(CpuKernels::parse(" avx2 "), Ok(CpuKernels::Avx2));
        assert_eq!(CpuKernels::parse("BASELINE"), Ok(CpuKernels::Baseline));
        let error = CpuKernels::parse("avx512").unwrap_err();
        assert!(error.contains("ALIGN_CPU_KERNELS=avx512"), "{error}");
        assert_eq!(CpuKernels::Baseline.in_use(), "baseline");
        assert_eq!(CpuKernels::Avx2.in_use(), CpuKernels::Native.in_use());
    }
}
