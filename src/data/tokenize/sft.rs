//! TRL 1.x SFT tokenization (`SFTTrainer._prepare_dataset`, TRL 1.16.0),
//! as the tiny-gemma fixture README's "SFT tokenization and loss" states it:
//! `input_ids` = the chat template applied to the whole conversation
//! (`<bos>` and `<eos>` come from the template), `labels` = `input_ids`
//! (loss on every token), both cut to the first `max_length` tokens.
//!
//! Prompt-completion rows score only the completion (TRL's default
//! `completion_only_loss`); plain-text rows are `tokenizer(text)` with EOS
//! appended when missing. A row left with no scored token is dropped.

use super::super::error::{DataError, RowLocation};
use super::super::schema::{Message, Record, Text};
use super::{TokenizeContext, truncate};
use crate::recipe::TruncationMode;

/// Label of a position that is not scored (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One prepared SFT example.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    pub location: RowLocation,
    /// The rendered (untruncated) text.
    pub text: String,
    /// Truncated to `max_length`.
    pub input_ids: Vec<u32>,
    /// `input_ids` where scored, [`IGNORE_INDEX`] elsewhere; same length.
    pub labels: Vec<i64>,
    /// Whether `max_length` cut the row.
    pub truncated: bool,
    /// Token count before truncation.
    pub full_length: usize,
    /// With `packing` (trl-1): the lengths of the conversations packed in
    /// this row, each with its own positions and attention; empty: one.
    pub documents: Vec<usize>,
}

impl SftExample {
    /// Number of positions that carry a label.
    pub fn scored_tokens(&self) -> usize {
        self.labels.iter().filter(|l| **l != IGNORE_INDEX).count()
    }
}

/// SFT options that change tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SftOptions {
    /// `None`: TRL's default (true for prompt-completion rows).
    pub completion_only_loss: Option<bool>,
}

/// Tokenize one SFT row.
pub fn tokenize_sft(
    record: &Record,
    location: &RowLocation,
    ctx: &TokenizeContext,
    options: SftOptions,
) -> Result<SftExample, DataError> {
    let (text, ids, scored) = match record {
        Record::Chat(messages) => {
            check_conversation(messages, location)?;
            let text = ctx.render(messages, false, location)?;
            let ids = ctx.encode(&text, location)?;
            let scored = vec![true; ids.len()];
            (text, ids, scored)
        }
        Record::PromptCompletion { prompt, completion } => {
            let only_completion = options.completion_only_loss.unwrap_or(true);
            prompt_completion(prompt, completion, location, ctx, only_completion)?
        }
        Record::Plain(text) => {
            let text = with_eos_text(text, ctx);
            let ids = ctx.encode_plain(&text, location)?;
            let scored = vec![true; ids.len()];
            (text, ids, scored)
        }
        Record::Preference { .. } => {
            return Err(DataError::Row {
                location: location.clone(),
                message: "preference row (chosen/rejected) in an SFT stage".into(),
            });
        }
    };
    let truncated = ctx.max_length.is_some_and(|max| ids.len() > max);
    let labels: Vec<i64> = ids
        .iter()
        .zip(&scored)
        .map(|(id, scored)| {
            if *scored {
                i64::from(*id)
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    Ok(SftExample {
        location: location.clone(),
        text,
        input_ids: truncate(&ids, ctx.max_length, TruncationMode::KeepStart),
        labels: truncate(&labels, ctx.max_length, TruncationMode::KeepStart),
        truncated,
        full_length: ids.len(),
        documents: Vec::new(),
    })
}

fn check_conversation(messages: &[Message], location: &RowLocation) -> Result<(), DataError> {
    let message = if messages.is_empty() {
        "the conversation is empty"
    } else if !messages.iter().any(|m| m.role == "assistant") {
        "the conversation has no assistant turn"
    } else {
        return Ok(());
    };
    Err(DataError::Row {
        location: location.clone(),
        message: message.into(),
    })
}

fn with_eos_text(text: &str, ctx: &TokenizeContext) -> String {
    match &ctx.tokenizer.special.eos {
        Some(eos) if !text.ends_with(eos.as_str()) => format!("{text}{eos}"),
        _ => text.to_string(),
    }
}

/// `(text, ids, scored)` of a prompt-completion row.
fn prompt_completion(
    prompt: &Text,
    completion: &Text,
    location: &RowLocation,
    ctx: &TokenizeContext,
    only_completion: bool,
) -> Result<(String, Vec<u32>, Vec<bool>), DataError> {
    let (prompt_ids, text, ids) = match (prompt, completion) {
        (Text::Chat(p), Text::Chat(c)) => {
            let full: Vec<Message> = p.iter().chain(c).cloned().collect();
            check_conversation(&full, location)?;
            let prompt_text = ctx.render(p, true, location)?;
            let text = ctx.render(&full, false, location)?;
            (
                ctx.encode(&prompt_text, location)?,
                text.clone(),
                ctx.encode(&text, location)?,
            )
        }
        (Text::Plain(p), Text::Plain(c)) => {
            let text = with_eos_text(&format!("{p}{c}"), ctx);
            (
                ctx.encode_plain(p, location)?,
                text.clone(),
                ctx.encode_plain(&text, location)?,
            )
        }
        _ => {
            return Err(DataError::Row {
                location: location.clone(),
                message: "prompt and completion must both be conversations or both be strings"
                    .into(),
            });
        }
    };
    let prompt_len = if only_completion {
        prompt_ids.len().min(ids.len())
    } else {
        0
    };
    let scored = (0..ids.len()).map(|i| i >= prompt_len).collect();
    Ok((text, ids, scored))
}
