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

mod exp;
mod gelu;
mod lanes;
mod matmul;
mod permute;
mod rms_norm;
mod rope;
mod softmax;

pub use exp::exp;
pub use gelu::{gelu_tanh_gated, gelu_tanh_gated_backward};
pub use matmul::{Batched, batched_matmul, linear, linear_backward};
pub use permute::{gather_strided, swap_middle_axes};
pub use rms_norm::{rms_norm, rms_norm_backward};
pub use rope::{RopeShape, rope, rope_backward};
pub use softmax::{masked_softmax, masked_softmax_backward};

/// Elements one rayon task handles: large enough that scheduling is noise,
/// small enough that both cores get many tasks.
const TASK_ELEMENTS: usize = 1 << 15;

/// A zeroed buffer for a kernel's output, zeroed on every core of rayon's
/// pool: a single-threaded `vec![0.0; n]` per output was a fifth of the
/// serial time left on the CPU bench.
pub fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(len);
    out.par_extend(rayon::iter::repeat_n(0.0f32, len));
    out
}
