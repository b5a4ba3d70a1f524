//! `compat: trl-0.7` SFT rows: the alignment-handbook's `sft` task
//! (ff618a4 `apply_chat_template`: an empty system turn inserted when the
//! template mentions one, the whole conversation rendered without a
//! generation prompt) and the ids `ConstantLengthDataset` tokenizes it to
//! (`tokenizer(text, add_special_tokens=..., truncation=False)`). Packing
//! itself is [`super::pack`].

use super::super::error::{DataError, RowLocation};
use super::super::schema::{Message, Record};
use super::TokenizeContext;
use super::pack::PackDocument;

/// How the handbook + TRL 0.7.10 turn a conversation into stream tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trl07SftOptions {
    /// The handbook inserts an empty system turn (`maybe_insert_system_message`).
    pub insert_system: bool,
    /// `dataset_kwargs.add_special_tokens` (TRL default true: the tokenizer's
    /// post-processor adds e.g. `<bos>`; the Gemma recipe turns it off).
    pub add_special_tokens: bool,
}

/// One rendered SFT conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Trl07SftText {
    pub location: RowLocation,
    /// The conversation as rendered (system turn included).
    pub messages: Vec<Message>,
    pub text: String,
    pub input_ids: Vec<u32>,
}

impl Trl07SftText {
    /// The document `ConstantLengthDataset` reads, as row `row` of the split.
    pub fn document(&self, row: usize) -> PackDocument {
        PackDocument {
            row,
            chars: self.text.chars().count(),
            ids: self.input_ids.clone(),
        }
    }
}

/// Render and tokenize one SFT row (a `messages` conversation).
pub fn render_sft_trl07(
    record: &Record,
    location: &RowLocation,
    ctx: &TokenizeContext,
    options: Trl07SftOptions,
) -> Result<Trl07SftText, DataError> {
    let Record::Chat(messages) = record else {
        return Err(DataError::Row {
            location: location.clone(),
            message:
                "compat trl-0.7 needs a `messages` conversation (the handbook's sft task reads only that column)"
                    .into(),
        });
    };
    if messages.is_empty() {
        return Err(DataError::Row {
            location: location.clone(),
            message: "the conversation is empty".into(),
        });
    }
    let mut messages = messages.clone();
    if options.insert_system && messages[0].role != "system" {
        messages.insert(
            0,
            Message {
                role: "system".into(),
                content: String::new(),
            },
        );
    }
    let text = ctx.render(&messages, false, location)?;
    let input_ids = if options.add_special_tokens {
        ctx.encode_plain(&text, location)?
    } else {
        ctx.encode(&text, location)?
    };
    Ok(Trl07SftText {
        location: location.clone(),
        messages,
        text,
        input_ids,
    })
}
