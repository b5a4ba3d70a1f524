//! Inference from a Hugging Face folder (a final model or any checkpoint):
//! its chat template, a KV cache, greedy or sampled decoding, streaming.
//! Imports `model` and `data` (tokenizer, chat template), never `train`.
//!
//! - [`sampling`]: how the next token is picked (greedy, temperature,
//!   top-k, top-p), seeded.
//! - [`generator`]: the model + tokenizer + template, one reply at a time.
//! - [`session`]: `align generate`'s prompt sources (one prompt, a JSONL
//!   file, an interactive chat) and outputs.

pub mod generator;
pub mod sampling;
pub mod session;

pub use generator::{Generation, Generator};
pub use sampling::SamplingSettings;
