//! Per-device memory estimate of one training stage: what a device holds at
//! the peak of an optimizer step, part by part.
//!
//! The formula (bytes; `P` parameters, `N` devices sharing the optimizer
//! state, `c` bytes of the compute dtype: 2 for bf16, 4 for fp32):
//!
//! | part | bytes | why |
//! |---|---|---|
//! | weights | `c·P` | the policy replica every device runs |
//! | master weights | `4·P/N` (bf16 only) | fp32 copy of this device's shard, updated by AdamW (ZeRO-1) |
//! | optimizer moments | `8·P/N` | AdamW's two fp32 moments of this device's shard (ZeRO-1) |
//! | gradients | `c·P` | what the backward produces: gradients in the weights' dtype |
//! | gradient accumulation | `4·P/N` when bf16 or accumulating | fp32 sum of this device's shard across micro-batches (and the fp32 gradients AdamW reads) |
//! | reference model | `c·P` (DPO without `precompute_ref_log_probs`) | the frozen reference, no gradients, no optimizer state |
//! | activations | see below | what the backward needs, plus its largest temporaries |
//! | runtime | 1 GB on CUDA, 0 on CPU | CUDA context and library workspaces (not measured here) |
//!
//! Activations of a micro-batch of `R` sequences of `S` tokens (`T = R·S`;
//! DPO: `R` = 2 × `per_device_train_batch_size`, chosen and rejected),
//! hidden `h`, `H` heads of `d` (`q = H·d`), MLP width `I`, vocabulary `V`,
//! `L` layers. They follow what burn-autodiff keeps for the backward of the
//! ops in `model::gemma` (each op keeps its inputs, e.g. `exp` its
//! argument, a product both factors; scalar ops, casts, sums and reshapes
//! keep nothing):
//!
//! - per layer: `2·T·h·(8 + c)` for the two RMSNorms (fp32 input and
//!   normalised value, compute-dtype output); `4·c·T·q` for attention (q and
//!   k after rotary, v, the merged heads before `o_proj`; grouped KV heads
//!   are repeated to `H` before the products); `(8 + c)·R·H·S²` for the
//!   scores (shifted scores and their `exp` in fp32, probabilities in the
//!   compute dtype: eager attention); `6·c·T·I` for the MLP with the tanh
//!   GELU (burn composes it from elementary ops) or `4·c·T·I` with the exact
//!   GELU;
//! - outside the layers: `8·T·h` for the final norm, `R·S²` bytes of mask,
//!   and for each of the `R·(S − 1)` positions that can be scored
//!   `4·V + c·h`: `train::logps` runs the LM head and the fp32 log-softmax in
//!   chunks of `CHUNK_ELEMENTS` logits, which bounds the temporaries but not
//!   what the backward keeps (every chunk's shifted logits);
//! - the largest backward temporaries: the greatest of `3·4·R·H·S²`
//!   (attention scores' gradients), `3·c·T·I` (MLP) and
//!   `3·4·chunk·V` (one logits chunk);
//! - without gradient checkpointing: `L` layers + outside + temporaries;
//!   with it (per decoder layer): the `L` layer inputs `L·c·T·h`, one layer
//!   recomputed during its backward, outside + temporaries.
//!
//! Gradients are counted in the compute dtype, not fp32: burn's backward
//! of bf16 weights yields bf16 gradients, which are reduced into the
//! device's fp32 shard after each micro-batch and released ("bf16 with fp32
//! accumulation", `train::precision`). Full fp32 gradients (`4·P`, 34 GB for
//! gemma-7b) next to the bf16 policy and reference would not fit 80 GB.
//!
//! Everything is summed, though gradients grow while the activations are
//! released during the backward: an upper bound of the peak by at most the
//! smaller of the two. The optimizer step runs after the activations and the
//! compute-dtype gradients are released, so its temporaries (a shard of
//! fp32) stay below this peak. Checked against the peak RSS of the CPU
//! benchmark (`tests/dry_run.rs`).

use serde::Serialize;

use crate::model::gemma::{Activation, GemmaConfig};
use crate::train::logps::CHUNK_ELEMENTS;

/// Bytes of the CUDA context and library workspaces on each GPU (typical
/// figure; the estimate adds it so that the verdict is not optimistic).
pub const CUDA_RUNTIME_BYTES: u64 = 1_000_000_000;

/// The dtype of weights, activations and the backward's gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    Bf16,
    Fp32,
}

impl ComputeDtype {
    pub fn bytes(self) -> u64 {
        match self {
            ComputeDtype::Bf16 => 2,
            ComputeDtype::Fp32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ComputeDtype::Bf16 => "bf16",
            ComputeDtype::Fp32 => "fp32",
        }
    }
}

/// The model sizes the estimate needs, from `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub parameters: u64,
    pub hidden: u64,
    /// `num_attention_heads × head_dim` (gemma-7b: 4096, not its hidden 3072).
    pub attention_width: u64,
    pub heads: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub vocab: u64,
    /// Exact GELU (one autodiff op) rather than the tanh approximation (six).
    pub exact_gelu: bool,
}

impl ModelShape {
    pub fn from_config(config: &GemmaConfig) -> Self {
        let n = |v: usize| v as u64;
        ModelShape {
            parameters: n(config.num_parameters()),
            hidden: n(config.hidden_size),
            attention_width: n(config.num_attention_heads * config.head_dim),
            heads: n(config.num_attention_heads),
            intermediate: n(config.intermediate_size),
            layers: n(config.num_hidden_layers),
            vocab: n(config.vocab_size),
            exact_gelu: config.activation == Activation::GeluExact,
        }
    }
}

/// One micro-batch on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Sequences per forward (DPO: chosen and rejected of every pair).
    pub rows: u64,
    /// Tokens per sequence (the recipe's `max_length`, the worst case).
    pub seq: u64,
}

impl Workload {
    /// Positions that can go through the LM head: all but the first of each row.
    pub fn scored_positions(&self) -> u64 {
        self.rows * self.seq.saturating_sub(1)
    }
}

/// How the stage trains, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub dtype: ComputeDtype,
    /// Devices sharing master weights, moments and the fp32 gradient sum.
    pub shards: u64,
    pub accumulation: u64,
    pub checkpointing: bool,
    /// A frozen reference model is held during training.
    pub reference: bool,
    pub runtime_bytes: u64,
}

/// The parts of the per-device total (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryParts {
    pub weights_bytes: u64,
    pub master_weights_bytes: u64,
    pub optimizer_moments_bytes: u64,
    pub gradients_bytes: u64,
    pub gradient_accumulation_bytes: u64,
    pub reference_model_bytes: u64,
    pub activations_bytes: u64,
    pub runtime_bytes: u64,
}

impl MemoryParts {
    pub fn total(&self) -> u64 {
        self.rows().iter().map(|(_, bytes)| bytes).sum()
    }

    /// `(label, bytes)` in report order.
    pub fn rows(&self) -> [(&'static str, u64); 8] {
        [
            ("weights", self.weights_bytes),
            ("master weights (fp32)", self.master_weights_bytes),
            ("AdamW moments (fp32)", self.optimizer_moments_bytes),
            ("gradients", self.gradients_bytes),
            (
                "gradient accumulation (fp32)",
                self.gradient_accumulation_bytes,
            ),
            ("reference model", self.reference_model_bytes),
            ("activations", self.activations_bytes),
            ("runtime", self.runtime_bytes),
        ]
    }
}

/// The activation terms, so the report can show both checkpointing choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ActivationParts {
    /// What one decoder layer keeps for its backward.
    pub per_layer_bytes: u64,
    /// The layers' inputs kept by gradient checkpointing.
    pub layer_inputs_bytes: u64,
    /// Final norm, mask and the log-softmax inputs of the scored positions.
    pub outside_layers_bytes: u64,
    /// The backward's largest temporaries.
    pub transient_bytes: u64,
    pub with_checkpointing_bytes: u64,
    pub without_checkpointing_bytes: u64,
}

/// The estimate of one stage on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    pub parts: MemoryParts,
    pub activations: ActivationParts,
    pub per_device_memory_bytes: u64,
}

/// The estimate for `shape` running `work` under `setup` (see the module doc).
pub fn estimate(shape: &ModelShape, work: &Workload, setup: &Setup) -> MemoryEstimate {
    let c = setup.dtype.bytes();
    let p = shape.parameters;
    let shard = |bytes_per_param: u64| (bytes_per_param * p).div_ceil(setup.shards.max(1));
    let bf16 = setup.dtype == ComputeDtype::Bf16;
    let activations = activations(shape, work, c);
    let parts = MemoryParts {
        weights_bytes: c * p,
        master_weights_bytes: if bf16 { shard(4) } else { 0 },
        optimizer_moments_bytes: shard(8),
        gradients_bytes: c * p,
        gradient_accumulation_bytes: if bf16 || setup.accumulation > 1 {
            shard(4)
        } else {
            0
        },
        reference_model_bytes: if setup.reference { c * p } else { 0 },
        activations_bytes: if setup.checkpointing {
            activations.with_checkpointing_bytes
        } else {
            activations.without_checkpointing_bytes
        },
        runtime_bytes: setup.runtime_bytes,
    };
    MemoryEstimate {
        parts,
        activations,
        per_device_memory_bytes: parts.total(),
    }
}

fn activations(shape: &ModelShape, work: &Workload, c: u64) -> ActivationParts {
    let ModelShape {
        hidden: h,
        attention_width: q,
        heads,
        intermediate,
        layers,
        vocab,
        ..
    } = *shape;
    let tokens = work.rows * work.seq;
    let score_elements = work.rows * heads * work.seq * work.seq;
    let mlp_tensors = if shape.exact_gelu { 4 } else { 6 };
    let per_layer = 2 * tokens * h * (8 + c)
        + 4 * c * tokens * q
        + (8 + c) * score_elements
        + mlp_tensors * c * tokens * intermediate;
    let scored = work.scored_positions();
    let outside = 8 * tokens * h + work.rows * work.seq * work.seq + scored * (4 * vocab + c * h);
    let chunk_rows = (CHUNK_ELEMENTS as u64 / vocab.max(1)).max(1).min(scored);
    let transient = [
        3 * 4 * score_elements,
        3 * c * tokens * intermediate,
        3 * 4 * chunk_rows * vocab,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let layer_inputs = layers * c * tokens * h;
    ActivationParts {
        per_layer_bytes: per_layer,
        layer_inputs_bytes: layer_inputs,
        outside_layers_bytes: outside,
        transient_bytes: transient,
        with_checkpointing_bytes: layer_inputs + per_layer + outside + transient,
        without_checkpointing_bytes: layers * per_layer + outside + transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma_7b() -> ModelShape {
        ModelShape {
            parameters: 8_537_680_896,
            hidden: 3072,
            attention_width: 4096,
            heads: 16,
            intermediate: 24576,
            layers: 28,
            vocab: 256_000,
            exact_gelu: true,
        }
    }

    fn zephyr_dpo(shards: u64, checkpointing: bool) -> MemoryEstimate {
        let setup = Setup {
            dtype: ComputeDtype::Bf16,
            shards,
            accumulation: 8,
            checkpointing,
            reference: true,
            runtime_bytes: CUDA_RUNTIME_BYTES,
        };
        estimate(&gemma_7b(), &Workload { rows: 4, seq: 1024 }, &setup)
    }

    #[test]
    fn sharding_divides_only_the_fp32_optimizer_state() {
        let one = zephyr_dpo(1, true).parts;
        let eight = zephyr_dpo(8, true).parts;
        assert_eq!(
            eight.optimizer_moments_bytes,
            one.optimizer_moments_bytes / 8
        );
        assert_eq!(eight.master_weights_bytes, one.master_weights_bytes / 8);
        assert_eq!(eight.weights_bytes, one.weights_bytes);
        assert_eq!(eight.gradients_bytes, 2 * 8_537_680_896);
        assert_eq!(eight.reference_model_bytes, 2 * 8_537_680_896);
    }

    #[test]
    fn checkpointing_keeps_layer_inputs_instead_of_every_layer() {
        let on = zephyr_dpo(8, true);
        let off = zephyr_dpo(8, false);
        assert!(on.parts.activations_bytes * 4 < off.parts.activations_bytes);
        assert_eq!(on.activations, off.activations);
        // 28 layer inputs of 4 × 1024 tokens × 3072 in bf16.
        assert_eq!(on.activations.layer_inputs_bytes, 28 * 4 * 1024 * 3072 * 2);
    }

    #[test]
    fn the_zephyr_dpo_stage_fits_8_devices_of_80_gb() {
        let total = zephyr_dpo(8, true).per_device_memory_bytes;
        assert!(total < 80_000_000_000, "{total}");
        assert!(zephyr_dpo(1, true).per_device_memory_bytes > 80_000_000_000);
    }

    #[test]
    fn fp32_without_accumulation_has_no_master_or_sum() {
        let setup = Setup {
            dtype: ComputeDtype::Fp32,
            shards: 1,
            accumulation: 1,
            checkpointing: false,
            reference: false,
            runtime_bytes: 0,
        };
        let parts = estimate(&gemma_7b(), &Workload { rows: 1, seq: 8 }, &setup).parts;
        assert_eq!(parts.master_weights_bytes, 0);
        assert_eq!(parts.gradient_accumulation_bytes, 0);
        assert_eq!(parts.reference_model_bytes, 0);
        assert_eq!(parts.optimizer_moments_bytes, 8 * 8_537_680_896);
    }
}
