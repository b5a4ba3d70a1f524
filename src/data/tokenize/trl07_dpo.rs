//! `compat: trl-0.7` preference rows: the alignment-handbook's `dpo` task
//! (ff618a4 `apply_chat_template`) followed by TRL 0.7.10's
//! `DPOTrainer.tokenize_row`, as `tiny-gemma-legacy/README.md` states them.
//!
//! 1. The prompt is `chosen[:-1]` (the handbook never compares chosen with
//!    rejected), with an empty system turn inserted in front when the
//!    template mentions one (`auto_insert_empty_system_msg`). It is rendered
//!    without a generation prompt; the last message of chosen and of
//!    rejected are rendered alone, so the assistant header belongs to the
//!    completion and is scored.
//! 2. `enc(prompt)` and `enc(prompt + answer)` (no special tokens added);
//!    the answer starts after `len(enc(prompt))`, one token earlier when
//!    the tokenizer merged across the boundary.
//! 3. `<bos>` is prepended to every prompt and `<eos>` appended to every
//!    answer, even though the template already wrote them (hence
//!    `<bos><bos>` and `<eos><eos>`).
//! 4. When a prompt plus the longer answer exceeds `max_length`, the prompt
//!    keeps `max_prompt_length` tokens (its end for `keep_end`); if that is
//!    still too long, each answer keeps its first `max_length −
//!    max_prompt_length` tokens. Both tests use the longer answer. No row is
//!    ever dropped.

use crate::recipe::TruncationMode;

use super::super::error::{DataError, RowLocation};
use super::super::schema::{Message, Record, Text};
use super::TokenizeContext;
use super::dpo::{DpoExample, PairMessages};

/// TRL 0.7.10 `DPOTrainer` limits and the special tokens it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trl07DpoOptions {
    pub max_length: usize,
    pub max_prompt_length: usize,
    pub truncation: TruncationMode,
    pub bos: u32,
    pub eos: u32,
    /// The handbook inserts an empty system turn (`maybe_insert_system_message`).
    pub insert_system: bool,
}

/// One prepared pair with what TRL 0.7.10 stored along the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Trl07Pair {
    /// What training sees: `prompt_ids` is the kept prompt (both `<bos>`
    /// included), `chosen_ids`/`rejected_ids` the kept answers. Needs no
    /// further truncation: every sequence fits `max_length`.
    pub example: DpoExample,
    /// The answers rendered alone (the handbook's `text_chosen`).
    pub chosen_text: String,
    pub rejected_text: String,
    /// `enc(prompt_text)`, before TRL's `<bos>`.
    pub prompt_text_ids: Vec<u32>,
    /// Answers with TRL's `<eos>`, before truncation.
    pub chosen_full: Vec<u32>,
    pub rejected_full: Vec<u32>,
    /// TRL's `prompt_input_ids` column (`<bos>` + common prompt, truncated).
    pub prompt_input_ids: Vec<u32>,
}

impl Trl07Pair {
    /// `1 + len(enc(prompt_text))`: the prompt with TRL's `<bos>`, uncut.
    pub fn prompt_len_full(&self) -> usize {
        1 + self.prompt_text_ids.len()
    }
}

/// Tokenize one preference row by the handbook + TRL 0.7.10 rules.
pub fn tokenize_pair_trl07(
    record: &Record,
    location: &RowLocation,
    ctx: &TokenizeContext,
    options: &Trl07DpoOptions,
) -> Result<Trl07Pair, DataError> {
    let messages = handbook_messages(record, location, options.insert_system)?;
    let prompt_text = ctx.render(&messages.prompt, false, location)?;
    let chosen_text = ctx.render(&messages.chosen, false, location)?;
    let rejected_text = ctx.render(&messages.rejected, false, location)?;
    let prompt_text_ids = ctx.encode(&prompt_text, location)?;
    let chosen = answer_split(&prompt_text, &prompt_text_ids, &chosen_text, ctx, location)?;
    let rejected = answer_split(
        &prompt_text,
        &prompt_text_ids,
        &rejected_text,
        ctx,
        location,
    )?;
    let common = chosen.prompt.len().min(rejected.prompt.len());
    let mut prompt_input_ids = with_bos(options.bos, &prompt_text_ids[..common]);
    let mut chosen_prompt = with_bos(options.bos, &chosen.prompt);
    let mut rejected_prompt = with_bos(options.bos, &rejected.prompt);
    let chosen_full = with_eos(chosen.answer, options.eos);
    let rejected_full = with_eos(rejected.answer, options.eos);
    let longer = chosen_full.len().max(rejected_full.len());
    for prompt in [
        &mut chosen_prompt,
        &mut rejected_prompt,
        &mut prompt_input_ids,
    ] {
        if prompt.len() + longer > options.max_length {
            *prompt = cut_prompt(prompt, options);
        }
    }
    let answer_cap = options.max_length - options.max_prompt_length;
    let cut_answer = |prompt: &[u32], answer: &[u32]| -> Vec<u32> {
        if prompt.len() + longer > options.max_length {
            answer[..answer.len().min(answer_cap)].to_vec()
        } else {
            answer.to_vec()
        }
    };
    let chosen_ids = cut_answer(&chosen_prompt, &chosen_full);
    let rejected_ids = cut_answer(&rejected_prompt, &rejected_full);
    if chosen_prompt != rejected_prompt {
        return Err(DataError::Row {
            location: location.clone(),
            message: "TRL 0.7.10's merge fix gave chosen and rejected different prompt tokens; such rows are not supported".into(),
        });
    }
    let example = DpoExample {
        location: location.clone(),
        prompt_chosen_text: format!("{prompt_text}{chosen_text}"),
        prompt_rejected_text: format!("{prompt_text}{rejected_text}"),
        prompt_text,
        messages: Some(messages),
        prompt_ids: chosen_prompt,
        chosen_ids,
        rejected_ids,
    };
    Ok(Trl07Pair {
        example,
        chosen_text,
        rejected_text,
        prompt_text_ids,
        chosen_full,
        rejected_full,
        prompt_input_ids,
    })
}

/// The handbook's `dpo` task: prompt = `chosen[:-1]` (+ empty system turn),
/// completions = the last message of each side. An explicit `prompt`
/// column is not read, as the handbook does not read it.
fn handbook_messages(
    record: &Record,
    location: &RowLocation,
    insert_system: bool,
) -> Result<PairMessages, DataError> {
    let Record::Preference {
        chosen: Text::Chat(chosen),
        rejected: Text::Chat(rejected),
        ..
    } = record
    else {
        return Err(row_error(
            location,
            "compat trl-0.7 needs `chosen` and `rejected` as conversations (the handbook's dpo task)",
        ));
    };
    let (Some((chosen_last, prompt)), Some((rejected_last, _))) =
        (chosen.split_last(), rejected.split_last())
    else {
        return Err(row_error(location, "chosen or rejected is empty"));
    };
    if prompt.is_empty() {
        return Err(row_error(
            location,
            "chosen has a single message: the handbook's prompt `chosen[:-1]` would be empty",
        ));
    }
    let mut prompt = prompt.to_vec();
    if insert_system && prompt[0].role != "system" {
        prompt.insert(
            0,
            Message {
                role: "system".into(),
                content: String::new(),
            },
        );
    }
    Ok(PairMessages {
        prompt,
        chosen: vec![chosen_last.clone()],
        rejected: vec![rejected_last.clone()],
    })
}

/// `build_tokenized_answer`: the prompt part and answer part of
/// `enc(prompt + answer)`.
struct AnswerSplit {
    prompt: Vec<u32>,
    answer: Vec<u32>,
}

fn answer_split(
    prompt_text: &str,
    prompt_ids: &[u32],
    answer_text: &str,
    ctx: &TokenizeContext,
    location: &RowLocation,
) -> Result<AnswerSplit, DataError> {
    let full = ctx.encode(&format!("{prompt_text}{answer_text}"), location)?;
    if full.len() < prompt_ids.len() {
        return Err(row_error(
            location,
            "prompt + answer tokenizes shorter than the prompt alone",
        ));
    }
    let mut start = prompt_ids.len();
    if full[..start] != *prompt_ids {
        start = start.saturating_sub(1);
    }
    Ok(AnswerSplit {
        prompt: full[..start].to_vec(),
        answer: full[start..].to_vec(),
    })
}

fn with_bos(bos: u32, ids: &[u32]) -> Vec<u32> {
    std::iter::once(bos).chain(ids.iter().copied()).collect()
}

fn with_eos(mut ids: Vec<u32>, eos: u32) -> Vec<u32> {
    ids.push(eos);
    ids
}

/// The prompt cut to `max_prompt_length` tokens from the side that
/// `truncation_mode` keeps.
fn cut_prompt(prompt: &[u32], options: &Trl07DpoOptions) -> Vec<u32> {
    let keep = options.max_prompt_length.min(prompt.len());
    match options.truncation {
        TruncationMode::KeepEnd => prompt[prompt.len() - keep..].to_vec(),
        TruncationMode::KeepStart => prompt[..keep].to_vec(),
    }
}

fn row_error(location: &RowLocation, message: &str) -> DataError {
    DataError::Row {
        location: location.clone(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_length: usize, max_prompt_length: usize) -> Trl07DpoOptions {
        Trl07DpoOptions {
            max_length,
            max_prompt_length,
            truncation: TruncationMode::KeepEnd,
            bos: 2,
            eos: 1,
            insert_system: true,
        }
    }

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
            row: 3,
        }
    }

    #[test]
    fn the_prompt_is_chosen_without_its_last_message_plus_a_system_turn() {
        let record = Record::Preference {
            prompt: None,
            chosen: Text::Chat(vec![msg("user", "q"), msg("assistant", "good")]),
            rejected: Text::Chat(vec![msg("user", "q"), msg("assistant", "bad")]),
        };
        let pair = handbook_messages(&record, &here(), true).expect("splits");
        assert_eq!(pair.prompt, [msg("system", ""), msg("user", "q")]);
        assert_eq!(pair.chosen, [msg("assistant", "good")]);
        let bare = handbook_messages(&record, &here(), false).expect("splits");
        assert_eq!(bare.prompt, [msg("user", "q")]);
    }

    #[test]
    fn keep_end_keeps_the_last_prompt_tokens() {
        let prompt: Vec<u32> = (10..20).collect();
        assert_eq!(cut_prompt(&prompt, &options(8, 3)), [17, 18, 19]);
        let start = Trl07DpoOptions {
            truncation: TruncationMode::KeepStart,
            ..options(8, 3)
        };
        assert_eq!(cut_prompt(&prompt, &start), [10, 11, 12]);
    }

    #[test]
    fn a_single_message_conversation_is_an_error_naming_the_row() {
        let record = Record::Preference {
            prompt: None,
            chosen: Text::Chat(vec![msg("assistant", "a")]),
            rejected: Text::Chat(vec![msg("assistant", "b")]),
        };
        let err = handbook_messages(&record, &here(), true).expect_err("empty prompt");
        assert!(
            err.to_string()
                .contains("row 3: chosen has a single message")
        );
    }
}
