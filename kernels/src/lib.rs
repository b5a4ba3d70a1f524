//! align's fused CPU kernels: plain functions on `f32` slices, each one pass
//! over its data, split over rayon's pool.
//!
//! Why a crate of its own: the model's element-wise hot spots (the attention
//! softmax, the MLP's gated GELU, the RMSNorm, the rotary embedding) cost
//! more on burn's CPU backend than their share of the FLOPs suggests,
//! because each is a chain of single-threaded scalar ops plus autodiff
//! bookkeeping for every link, and its linear layers' products pay for an
//! extra copy of each output and a transposed weight gradient. These
//! kernels do each in one pass, forward and backward; `align::model::fused` plugs them
//! into burn. Kept apart so that the dev profile can build them with full
//! optimisation (loop vectorisation needs `opt-level = 3`) while the main
//! crate builds fast.

mod attention;
mod exp;
mod gelu;
mod lanes;
mod matmul;
mod permute;
mod rms_norm;
mod rope;
mod softmax;

pub use attention::{AttentionShape, attention, attention_backward};
pub use exp::exp;
pub use gelu::{gelu_tanh_gated, gelu_tanh_gated_backward};
pub use matmul::{linear, linear_backward};
pub use permute::{gather_strided, swap_middle_axes};
pub use rms_norm::{rms_norm, rms_norm_backward};
pub use rope::{RopeShape, rope, rope_backward};

/// Elements one rayon task handles: large enough that scheduling is noise,
/// small enough that both cores get many tasks.
const TASK_ELEMENTS: usize = 1 << 15;

/// A zeroed buffer for a kernel's output, zeroed on every core of rayon's
/// pool, a memset per task: a single-threaded `vec![0.0; n]` per output was
/// a fifth of the serial time left on the CPU bench (glibc's `calloc` clears
/// reused heap memory itself), and collecting a parallel iterator of zeros
/// wrote them one element at a time (6% of the bench's samples).
pub fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(TASK_ELEMENTS)
        .for_each(|chunk| chunk.fill(MaybeUninit::new(0.0)));
    // SAFETY: the capacity is `len` and all of its first `len` elements
    // were initialised just above.
    unsafe { out.set_len(len) };
    out
}
