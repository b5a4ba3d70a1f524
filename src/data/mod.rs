//! Data pipeline: datasets, chat templates, TRL-exact tokenization, batching.
//!
//! Imports `recipe` only, never `model` or `train` (`docs/architecture.md`,
//! "Dependency rules"). Rows flow:
//!
//! - [`hub`]: dataset/model ids to local folders (ALIGN_DATA_DIR, HF cache),
//!   and the downloads from the Hugging Face Hub that fill the cache.
//! - [`source`]: a split's parquet files, read with parquet + arrow.
//! - [`card`]: a dataset card's `configs:`, the files of each split.
//! - [`schema`]: columns to records (preference pairs, conversations).
//! - [`mixer`]: the handbook's dataset mixer (fractions, seeded shuffle).
//! - [`tokenizer`]: `tokenizer.json` + special tokens + chat template text.
//! - [`chat`]: chat template rendering (minijinja, as transformers).
//! - [`tokenize`]: TRL's rules per `compat` ([`tokenize::dpo`], [`tokenize::sft`];
//!   `trl-0.7`: [`tokenize::trl07_dpo`], [`tokenize::trl07_sft`], [`tokenize::pack`]).
//! - [`prepare`]: all of the above for one stage and split.
//! - [`batch`]: padded micro-batches and the epoch order.
//! - [`dump`]: `align data`, the prepared rows as JSONL.
//! - [`error`]: [`DataError`], naming file, column and row.

pub mod batch;
pub mod card;
pub mod chat;
pub mod dump;
mod dump_summary;
mod dump_trl07;
pub mod error;
pub mod hub;
pub mod mixer;
pub mod prepare;
pub mod schema;
pub mod source;
pub mod tokenize;
pub mod tokenizer;

pub use batch::{DpoBatch, SftBatch, epoch_order, micro_batches};
pub use chat::ChatTemplate;
pub use dump::{dump_rows, dump_stage};
pub use dump_summary::{DataSummary, LengthStats};
pub use error::{DataError, RowLocation};
pub use hub::{RepoKind, resolve};
pub use prepare::{
    DpoSplit, PackedSplit, Prepared, PreparedSplit, Preprocessor, SftSplit, Trl07DpoSplit,
    prepare_dpo, prepare_dpo_trl07, prepare_sft, prepare_sft_trl07,
};
pub use schema::{Message, Record};
pub use tokenize::dpo::{DpoExample, MaskedSequence, Side};
pub use tokenize::sft::{IGNORE_INDEX, SftExample};
pub use tokenizer::TextTokenizer;
