//! Models and their checkpoints. Imports nothing of ours but `backend`:
//! a Gemma knows no recipe, no dataset and no loss.

pub mod gemma;
pub mod hf;
pub mod inspect;
