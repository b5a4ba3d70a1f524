//! TRL 1.x preference tokenization (`DPOTrainer._prepare_dataset` and
//! `DataCollatorForPreference`, TRL 1.16.0), as the tiny-gemma fixture
//! README's "DPO tokenization rules" state them:
//!
//! 1. the prompt is the longest common message prefix of chosen and
//!    rejected (`trl.data_utils.extract_prompt`);
//! 2. `prompt_ids` = template(prompt, add_generation_prompt), and
//!    `prompt_{chosen,rejected}_ids` = template(prompt + completion);
//! 3. the prompt is cut at the common token prefix of the three, the rest
//!    is the completion (so the assistant header belongs to the prompt);
//! 4. with `keep_start`, a row whose prompt has >= `max_length` tokens is
//!    dropped;
//! 5. the model sees `prompt + completion` cut to `max_length`, with a
//!    completion mask ([`DpoExample::sequence`]).

use serde::Serialize;

use super::super::error::{DataError, RowLocation};
use super::super::schema::{Message, Record, Text};
use super::{TokenizeContext, common_prefix_len, truncate};
use crate::recipe::TruncationMode;

/// One prepared preference pair: TRL's stored columns plus the rendered
/// texts (for `align data`).
#[derive(Debug, Clone, PartialEq)]
pub struct DpoExample {
    pub location: RowLocation,
    /// The extracted messages; `None` for plain-text rows.
    pub messages: Option<PairMessages>,
    pub prompt_text: String,
    pub prompt_chosen_text: String,
    pub prompt_rejected_text: String,
    /// Untruncated, as TRL stores them.
    pub prompt_ids: Vec<u32>,
    pub chosen_ids: Vec<u32>,
    pub rejected_ids: Vec<u32>,
}

/// Prompt and completions of a conversational pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairMessages {
    pub prompt: Vec<Message>,
    pub chosen: Vec<Message>,
    pub rejected: Vec<Message>,
}

/// A sequence the model sees and its completion mask (1 = scored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedSequence {
    pub input_ids: Vec<u32>,
    pub completion_mask: Vec<u8>,
}

impl MaskedSequence {
    /// Number of scored (completion) tokens.
    pub fn completion_tokens(&self) -> usize {
        self.completion_mask.iter().filter(|m| **m == 1).count()
    }
}

/// Which completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Chosen,
    Rejected,
}

impl DpoExample {
    /// `prompt + completion`, truncated as the collator does.
    pub fn sequence(
        &self,
        side: Side,
        max_length: Option<usize>,
        mode: TruncationMode,
    ) -> MaskedSequence {
        let completion = match side {
            Side::Chosen => &self.chosen_ids,
            Side::Rejected => &self.rejected_ids,
        };
        let ids: Vec<u32> = self.prompt_ids.iter().chain(completion).copied().collect();
        let mask: Vec<u8> = std::iter::repeat_n(0, self.prompt_ids.len())
            .chain(std::iter::repeat_n(1, completion.len()))
            .collect();
        MaskedSequence {
            input_ids: truncate(&ids, max_length, mode),
            completion_mask: truncate(&mask, max_length, mode),
        }
    }

    /// Why TRL would drop the row, if it would (keep_start only).
    pub fn drop_reason(&self, max_length: Option<usize>, mode: TruncationMode) -> Option<String> {
        let max = max_length?;
        (mode == TruncationMode::KeepStart && self.prompt_ids.len() >= max).then(|| {
            format!(
                "len(prompt_ids)={} >= max_length={max}",
                self.prompt_ids.len()
            )
        })
    }
}

/// Tokenize one preference row.
pub fn tokenize_pair(
    record: &Record,
    location: &RowLocation,
    ctx: &TokenizeContext,
) -> Result<DpoExample, DataError> {
    let Record::Preference {
        prompt,
        chosen,
        rejected,
    } = record
    else {
        return Err(row_error(
            location,
            "not a preference row (needs `chosen` and `rejected`)",
        ));
    };
    match (prompt, chosen, rejected) {
        (None, Text::Chat(c), Text::Chat(r)) => {
            let messages = split_conversations(c, r, location)?;
            tokenize_chat(messages, location, ctx)
        }
        (Some(Text::Chat(p)), Text::Chat(c), Text::Chat(r)) => {
            let messages = PairMessages {
                prompt: p.clone(),
                chosen: c.clone(),
                rejected: r.clone(),
            };
            check_pair(&messages, location)?;
            tokenize_chat(messages, location, ctx)
        }
        (None, Text::Plain(c), Text::Plain(r)) => {
            let (p, c, r) = split_strings(c, r, location)?;
            tokenize_plain(&p, &c, &r, location, ctx)
        }
        (Some(Text::Plain(p)), Text::Plain(c), Text::Plain(r)) => {
            tokenize_plain(p, c, r, location, ctx)
        }
        _ => Err(row_error(
            location,
            "prompt, chosen and rejected must all be conversations or all be strings",
        )),
    }
}

fn row_error(location: &RowLocation, message: &str) -> DataError {
    DataError::Row {
        location: location.clone(),
        message: message.to_string(),
    }
}

/// `extract_prompt` on message lists: the longest common message prefix.
/// Python's loop leaves `idx` at the last index when one list is a prefix of
/// the other; that case has an empty completion and is an error here.
fn split_conversations(
    chosen: &[Message],
    rejected: &[Message],
    location: &RowLocation,
) -> Result<PairMessages, DataError> {
    let common = common_prefix_len(chosen, rejected);
    if common == 0 {
        return Err(row_error(
            location,
            "chosen and rejected have no common prompt (their first messages differ)",
        ));
    }
    let messages = PairMessages {
        prompt: chosen[..common].to_vec(),
        chosen: chosen[common..].to_vec(),
        rejected: rejected[common..].to_vec(),
    };
    check_pair(&messages, location)?;
    Ok(messages)
}

fn check_pair(messages: &PairMessages, location: &RowLocation) -> Result<(), DataError> {
    if messages.prompt.is_empty() {
        return Err(row_error(location, "the prompt is empty"));
    }
    for (name, completion) in [
        ("chosen", &messages.chosen),
        ("rejected", &messages.rejected),
    ] {
        if completion.is_empty() {
            return Err(row_error(
                location,
                &format!(
                    "{name} has no completion after the common prompt (chosen and rejected are identical or one is a prefix of the other)"
                ),
            ));
        }
        if !completion.iter().any(|m| m.role == "assistant") {
            return Err(row_error(
                location,
                &format!("{name} completion has no assistant turn"),
            ));
        }
    }
    Ok(())
}

fn tokenize_chat(
    messages: PairMessages,
    location: &RowLocation,
    ctx: &TokenizeContext,
) -> Result<DpoExample, DataError> {
    let joined = |completion: &[Message]| -> Vec<Message> {
        messages.prompt.iter().chain(completion).cloned().collect()
    };
    let prompt_text = ctx.render(&messages.prompt, true, location)?;
    let prompt_chosen_text = ctx.render(&joined(&messages.chosen), false, location)?;
    let prompt_rejected_text = ctx.render(&joined(&messages.rejected), false, location)?;
    let prompt_ids = ctx.encode(&prompt_text, location)?;
    let prompt_chosen_ids = ctx.encode(&prompt_chosen_text, location)?;
    let prompt_rejected_ids = ctx.encode(&prompt_rejected_text, location)?;
    let (prompt_ids, chosen_ids, rejected_ids) =
        split_at_common_prefix(prompt_ids, &prompt_chosen_ids, &prompt_rejected_ids);
    Ok(DpoExample {
        location: location.clone(),
        messages: Some(messages),
        prompt_text,
        prompt_chosen_text,
        prompt_rejected_text,
        prompt_ids,
        chosen_ids,
        rejected_ids,
    })
}

/// TRL: `prompt_len = min(common(prompt, prompt+chosen), common(prompt,
/// prompt+rejected))`; the completions are what follows.
fn split_at_common_prefix(
    mut prompt_ids: Vec<u32>,
    prompt_chosen: &[u32],
    prompt_rejected: &[u32],
) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let prompt_len = common_prefix_len(&prompt_ids, prompt_chosen)
        .min(common_prefix_len(&prompt_ids, prompt_rejected));
    prompt_ids.truncate(prompt_len);
    (
        prompt_ids,
        prompt_chosen[prompt_len..].to_vec(),
        prompt_rejected[prompt_len..].to_vec(),
    )
}

/// `extract_prompt` on strings: the common character prefix, minus a
/// trailing space (which stays with the completions).
fn split_strings(
    chosen: &str,
    rejected: &str,
    location: &RowLocation,
) -> Result<(String, String, String), DataError> {
    let c: Vec<char> = chosen.chars().collect();
    let r: Vec<char> = rejected.chars().collect();
    let mut common = common_prefix_len(&c, &r);
    if common > 0 && common < c.len().min(r.len()) && c[common - 1] == ' ' {
        common -= 1;
    }
    if common == 0 {
        return Err(row_error(
            location,
            "chosen and rejected have no common prompt (they differ from the first character)",
        ));
    }
    let text = |chars: &[char]| chars.iter().collect::<String>();
    Ok((text(&c[..common]), text(&c[common..]), text(&r[common..])))
}

/// Plain-text pairs: `tokenizer(prompt)` (special tokens added by the
/// post-processor, e.g. `<bos>`) and `tokenizer(prompt + completion)` with
/// EOS appended when missing, split at the common prefix as for
/// conversations. Not covered by the fixture.
fn tokenize_plain(
    prompt: &str,
    chosen: &str,
    rejected: &str,
    location: &RowLocation,
    ctx: &TokenizeContext,
) -> Result<DpoExample, DataError> {
    if chosen.is_empty() || rejected.is_empty() {
        return Err(row_error(location, "chosen or rejected is empty"));
    }
    let eos = ctx.tokenizer.eos_token_id();
    let with_eos = |mut ids: Vec<u32>| {
        if let Some(eos) = eos
            && ids.last() != Some(&eos)
        {
            ids.push(eos);
        }
        ids
    };
    let prompt_ids = ctx.encode_plain(prompt, location)?;
    let prompt_chosen_text = format!("{prompt}{chosen}");
    let prompt_rejected_text = format!("{prompt}{rejected}");
    let prompt_chosen_ids = with_eos(ctx.encode_plain(&prompt_chosen_text, location)?);
    let prompt_rejected_ids = with_eos(ctx.encode_plain(&prompt_rejected_text, location)?);
    let (prompt_ids, chosen_ids, rejected_ids) =
        split_at_common_prefix(prompt_ids, &prompt_chosen_ids, &prompt_rejected_ids);
    Ok(DpoExample {
        location: location.clone(),
        messages: None,
        prompt_text: prompt.to_string(),
        prompt_chosen_text,
        prompt_rejected_text,
        prompt_ids,
        chosen_ids,
        rejected_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    fn here() -> RowLocation {
        RowLocation {
            dataset: "d".into(),
            split: "train".into(),
            row: 7,
        }
    }

    #[test]
    fn the_prompt_is_the_common_message_prefix() {
        let chosen = [msg("user", "q"), msg("assistant", "good")];
        let rejected = [msg("user", "q"), msg("assistant", "bad")];
        let pair = split_conversations(&chosen, &rejected, &here()).expect("splits");
        assert_eq!(pair.prompt, [msg("user", "q")]);
        assert_eq!(pair.chosen, [msg("assistant", "good")]);
    }

    #[test]
    fn no_common_prompt_is_an_error_naming_the_row() {
        let chosen = [msg("user", "q1"), msg("assistant", "a")];
        let rejected = [msg("user", "q2"), msg("assistant", "a")];
        let err = split_conversations(&chosen, &rejected, &here()).expect_err("no prompt");
        assert!(
            err.to_string()
                .contains("row 7: chosen and rejected have no common prompt"),
            "{err}"
        );
    }

    #[test]
    fn string_prompts_leave_the_space_with_the_completion() {
        let (p, c, r) = split_strings("Q: sky? blue", "Q: sky? red", &here()).expect("splits");
        assert_eq!(
            (p.as_str(), c.as_str(), r.as_str()),
            ("Q: sky?", " blue", " red")
        );
    }

    #[test]
    fn completion_mask_covers_exactly_the_completion_and_truncates_with_it() {
        let example = DpoExample {
            location: here(),
            messages: None,
            prompt_text: String::new(),
            prompt_chosen_text: String::new(),
            prompt_rejected_text: String::new(),
            prompt_ids: vec![2, 5, 9],
            chosen_ids: vec![10, 11, 1],
            rejected_ids: vec![12, 1],
        };
        let full = example.sequence(Side::Chosen, None, TruncationMode::KeepStart);
        assert_eq!(full.input_ids, [2, 5, 9, 10, 11, 1]);
        assert_eq!(full.completion_mask, [0, 0, 0, 1, 1, 1]);
        let cut = example.sequence(Side::Chosen, Some(4), TruncationMode::KeepStart);
        assert_eq!(cut.input_ids, [2, 5, 9, 10]);
        assert_eq!(cut.completion_mask, [0, 0, 0, 1]);
        assert_eq!(
            example
                .drop_reason(Some(3), TruncationMode::KeepStart)
                .as_deref(),
            Some("len(prompt_ids)=3 >= max_length=3")
        );
        assert_eq!(
            example.drop_reason(Some(4), TruncationMode::KeepStart),
            None
        );
    }
}
