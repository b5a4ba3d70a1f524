//! `compat: trl-0.7`: the training objectives of the March-2024 stack
//! (TRL 0.7.10 on transformers 4.38), beside the TRL 1.x ones in
//! `train::preference` and `train::sft`. The step accounting and logging
//! rules of transformers 4.38 are in `train::accounting`.
//!
//! - [`loss`]: TRL 0.7.10's DPO losses.
//! - [`preference`]: its DPO objective and metrics.
//! - [`sft`]: its SFT objective on packed sequences.

pub mod loss;
pub mod preference;
pub mod sft;
