//! Rows to token ids, by the rules of the stack named by `compat`.
//!
//! - [`dpo`]: TRL 1.x `DPOTrainer` preparation (prompt extraction, split at
//!   the common token prefix, dropping over-long prompts, truncation).
//! - [`sft`]: TRL 1.x `SFTTrainer` preparation (whole conversation,
//!   labels, truncation).
//!
//! - [`trl07_dpo`]: `compat: trl-0.7`, the handbook's `dpo` task and TRL
//!   0.7.10 `tokenize_row` (double `<bos>`/`<eos>`, prompt truncation).
//! - [`trl07_sft`]: `compat: trl-0.7`, the handbook's `sft` task.
//! - [`pack`]: TRL 0.7.10's `ConstantLengthDataset` packing.
//!
//! `prepare.rs` picks one set once, from the stage's `compat`.

pub mod bfd;
pub mod dpo;
pub mod pack;
pub mod sft;
pub mod trl07_dpo;
pub mod trl07_sft;

use super::chat::ChatTemplate;
use super::error::{DataError, RowLocation};
use super::schema::Message;
use super::tokenizer::TextTokenizer;
use crate::recipe::TruncationMode;

/// What tokenization needs besides the row.
pub struct TokenizeContext<'a> {
    pub tokenizer: &'a TextTokenizer,
    /// `None` when the data is plain text only and no template was found.
    pub template: Option<&'a ChatTemplate>,
    /// `None`: no truncation, no dropping.
    pub max_length: Option<usize>,
    pub truncation: TruncationMode,
}

impl TokenizeContext<'_> {
    /// Render a conversation, with errors attached to the row.
    pub(crate) fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        location: &RowLocation,
    ) -> Result<String, DataError> {
        let template = self.template.ok_or_else(|| DataError::Template {
            location: location.clone(),
            message: "is missing: the tokenizer has none and the recipe sets no `chat_template`"
                .into(),
        })?;
        template
            .render(messages, add_generation_prompt)
            .map_err(|message| DataError::Template {
                location: location.clone(),
                message,
            })
    }

    /// Token ids of rendered text (no special tokens added).
    pub(crate) fn encode(&self, text: &str, location: &RowLocation) -> Result<Vec<u32>, DataError> {
        self.tokenizer
            .encode(text)
            .map_err(|message| DataError::Row {
                location: location.clone(),
                message,
            })
    }

    /// Token ids of plain text as `tokenizer(text)` gives them.
    pub(crate) fn encode_plain(
        &self,
        text: &str,
        location: &RowLocation,
    ) -> Result<Vec<u32>, DataError> {
        self.tokenizer
            .encode_with_special_tokens(text)
            .map_err(|message| DataError::Row {
                location: location.clone(),
                message,
            })
    }
}

/// Length of the longest common prefix of two sequences.
pub fn common_prefix_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Cut `items` to `max_length` (keep_start keeps the head, keep_end the tail).
pub fn truncate<T: Clone>(items: &[T], max_length: Option<usize>, mode: TruncationMode) -> Vec<T> {
    match max_length {
        Some(max) if items.len() > max => match mode {
            TruncationMode::KeepStart => items[..max].to_vec(),
            TruncationMode::KeepEnd => items[items.len() - max..].to_vec(),
        },
        _ => items.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_truncation() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix_len::<u32>(&[], &[1]), 0);
        assert_eq!(
            truncate(&[1, 2, 3, 4], Some(3), TruncationMode::KeepStart),
            vec![1, 2, 3]
        );
        assert_eq!(
            truncate(&[1, 2, 3, 4], Some(3), TruncationMode::KeepEnd),
            vec![2, 3, 4]
        );
        assert_eq!(
            truncate(&[1, 2], None, TruncationMode::KeepStart),
            vec![1, 2]
        );
    }
}
