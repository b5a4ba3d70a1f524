//! `align`: supervised fine-tuning and Direct Preference Optimization of Gemma
//! on burn, reproducing the alignment-handbook's zephyr-7b-gemma recipe with
//! the numbers of transformers + TRL.
//!
//! Data flows one way: `recipe` → `data` → `model` → `train` → `log`. Each
//! module's doc comment says what it may import; `docs/architecture.md` maps
//! the modules, their dependency rules and where each concept lives.

pub mod backend;
pub mod data;
pub mod generate;
pub mod log;
pub mod model;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod summary;
pub mod sweep;
pub mod train;
