//! Training: log-probs, objectives (DPO, SFT), optimizer, schedule and the
//! one training loop. Imports `data`, `model`, `recipe` and `log`.

pub mod accounting;
pub mod adamw;
pub mod adamw_update;
pub mod backend;
pub mod checkpoint;
pub mod compat;
pub mod dpo;
pub mod error;
pub mod grad_norm;
pub mod hooks;
pub mod interrupt;
pub mod logps;
pub mod objective;
pub mod parallel;
pub mod precision;
pub mod preference;
pub mod recompute;
pub mod reference;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod sequence_sums;
pub mod sft;
pub mod stage;
pub mod token_logps;
pub mod trainer;
pub mod trl07;

pub use backend::{LogpsBackend, TrainBackend};
