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
//! `align::model::fused` plugs them into burn. Kept apart so that the dev
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

/// Runs `kernel` compiled for AVX2 and FMA where the CPU has them, else as
/// built: x86-64's SSE2 baseline, so that one binary runs on any x86-64 CPU.
/// The element-wise loops then vectorise twice as wide. `kernel` must be an
/// `#[inline(always)]` closure (and what it calls inlined too): code is
/// compiled for AVX2 only where it is inlined into the wrapper. The results are the
/// same bits either way: the loops' operations and their order do not
/// depend on the width (no `mul_add`, and Rust never fuses a multiply and an
/// add on its own).
#[inline(always)]
pub(crate) fn wide<R>(kernel: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features (checked just above).
        return unsafe { with_avx2_fma(kernel) };
    }
    kernel()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2_fma<R>(kernel: impl FnOnce() -> R) -> R {
    kernel()
}
