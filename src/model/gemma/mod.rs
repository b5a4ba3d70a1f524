//! Gemma v1 in burn, read top to bottom: [`config`], [`norm`], [`rope`],
//! [`linear`], [`mlp`], [`attention`], [`block`], [`model`], and the math
//! they call, composed and as fused CPU kernels, in [`ops`]. Field names are
//! the Hugging Face checkpoint's (`q_proj`, `input_layernorm`, ...), so a
//! parameter's path in the module is its tensor name in `model.safetensors`.

pub mod attention;
pub mod block;
pub mod build;
pub mod config;
pub mod embedding;
pub mod linear;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod ops;
pub mod rope;

use std::path::PathBuf;

pub use build::{RandomInit, WeightSource};
pub use config::{Activation, ActivationRule, GemmaConfig};
pub use model::{EachLayer, ForwardInput, Gemma, KvCache, LayerRunner};
pub use ops::GemmaBackend;

/// Errors reading a `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}
