//! `align data` for `compat: trl-0.7` stages: the rows with the field names
//! of `tiny-gemma-legacy`'s `expected/tokenized.jsonl` (DPO: the handbook's
//! texts, then the columns TRL 0.7.10's `tokenize_row` stores) and
//! `expected/sft_packed.jsonl` (SFT: the packed sequences the trainer reads).

use std::io::Write;

use serde::Serialize;

use crate::recipe::{SplitRole, StageConfig};

use super::dump_summary::{DataSummary, LengthStats, write_line};
use super::error::DataError;
use super::prepare::{Preprocessor, prepare_dpo_trl07, prepare_sft_trl07, role_name};
use super::schema::Message;
use super::tokenize::dpo::MaskedSequence;
use super::tokenize::pack::{PackedSequence, Segment};
use super::tokenize::sft::IGNORE_INDEX;
use super::tokenize::trl07_dpo::Trl07Pair;

/// Write the DPO rows of `role`; fills `summary`.
pub(super) fn dump_dpo(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
    limit: usize,
    out: &mut dyn Write,
    summary: &mut DataSummary,
) -> Result<(), DataError> {
    let split = prepare_dpo_trl07(stage, pre, role)?;
    let mut lengths = Vec::new();
    for (i, row) in split.rows.iter().enumerate() {
        let json = PairJson::new(&row.example, i);
        lengths.push(json.prompt_len_full + json.longer_response_full());
        summary.truncated += usize::from(
            json.prompt_truncated
                || json.chosen_response_truncated
                || json.rejected_response_truncated,
        );
        if i < limit {
            write_line(out, &json)?;
            summary.written += 1;
        }
    }
    summary.rows = split.rows.len();
    summary.lengths = LengthStats::of(lengths);
    Ok(())
}

/// Write the packed SFT sequences of `role`; fills `summary` (its rows are
/// the conversations, its lengths their token counts).
pub(super) fn dump_sft(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
    limit: usize,
    out: &mut dyn Write,
    summary: &mut DataSummary,
) -> Result<(), DataError> {
    let split = prepare_sft_trl07(stage, pre, role)?;
    for (index, sequence) in split.packed.iter().enumerate() {
        if index < limit {
            write_line(out, &PackedJson::new(sequence, role, index))?;
            summary.written += 1;
        }
    }
    summary.rows = split.texts.len();
    summary.lengths = LengthStats::of(split.texts.iter().map(|t| t.input_ids.len()).collect());
    Ok(())
}

/// One line of legacy `tokenized.jsonl`.
#[derive(Serialize)]
struct PairJson<'a> {
    row: usize,
    train_index: usize,
    prompt_messages: &'a [Message],
    chosen_messages: &'a [Message],
    rejected_messages: &'a [Message],
    prompt_text: &'a str,
    chosen_text: &'a str,
    rejected_text: &'a str,
    prompt_text_ids: &'a [u32],
    chosen_response_ids_full: &'a [u32],
    rejected_response_ids_full: &'a [u32],
    prompt_len_full: usize,
    chosen_response_len_full: usize,
    rejected_response_len_full: usize,
    chosen_input_ids: Vec<u32>,
    chosen_attention_mask: Vec<u8>,
    chosen_labels: Vec<i64>,
    rejected_input_ids: Vec<u32>,
    rejected_attention_mask: Vec<u8>,
    rejected_labels: Vec<i64>,
    prompt_input_ids: &'a [u32],
    prompt_attention_mask: Vec<u8>,
    prompt_len: usize,
    chosen_response_len: usize,
    rejected_response_len: usize,
    prompt_truncated: bool,
    chosen_response_truncated: bool,
    rejected_response_truncated: bool,
    chosen_completion_tokens: usize,
    rejected_completion_tokens: usize,
}

impl<'a> PairJson<'a> {
    fn new(pair: &'a Trl07Pair, index: usize) -> Self {
        let example = &pair.example;
        let messages = example
            .messages
            .as_ref()
            .expect("trl-0.7 pairs are conversations");
        let side = |ids: &[u32]| {
            let mut sequence = MaskedSequence {
                input_ids: example.prompt_ids.clone(),
                completion_mask: vec![0; example.prompt_ids.len()],
            };
            sequence.input_ids.extend_from_slice(ids);
            sequence.completion_mask.extend(ids.iter().map(|_| 1));
            sequence
        };
        let (chosen, rejected) = (side(&example.chosen_ids), side(&example.rejected_ids));
        let prompt_len = example.prompt_ids.len();
        PairJson {
            row: example.location.row,
            train_index: index,
            prompt_messages: &messages.prompt,
            chosen_messages: &messages.chosen,
            rejected_messages: &messages.rejected,
            prompt_text: &example.prompt_text,
            chosen_text: &pair.chosen_text,
            rejected_text: &pair.rejected_text,
            prompt_text_ids: &pair.prompt_text_ids,
            chosen_response_ids_full: &pair.chosen_full,
            rejected_response_ids_full: &pair.rejected_full,
            prompt_len_full: pair.prompt_len_full(),
            chosen_response_len_full: pair.chosen_full.len(),
            rejected_response_len_full: pair.rejected_full.len(),
            chosen_attention_mask: vec![1; chosen.input_ids.len()],
            chosen_labels: labels(&chosen),
            rejected_attention_mask: vec![1; rejected.input_ids.len()],
            rejected_labels: labels(&rejected),
            prompt_input_ids: &pair.prompt_input_ids,
            prompt_attention_mask: vec![1; pair.prompt_input_ids.len()],
            prompt_len,
            chosen_response_len: example.chosen_ids.len(),
            rejected_response_len: example.rejected_ids.len(),
            prompt_truncated: prompt_len < pair.prompt_len_full(),
            chosen_response_truncated: example.chosen_ids.len() < pair.chosen_full.len(),
            rejected_response_truncated: example.rejected_ids.len() < pair.rejected_full.len(),
            chosen_completion_tokens: scored(&chosen),
            rejected_completion_tokens: scored(&rejected),
            chosen_input_ids: chosen.input_ids,
            rejected_input_ids: rejected.input_ids,
        }
    }

    fn longer_response_full(&self) -> usize {
        self.chosen_response_len_full
            .max(self.rejected_response_len_full)
    }
}

/// TRL's labels: the token where scored, -100 on the prompt.
fn labels(sequence: &MaskedSequence) -> Vec<i64> {
    sequence
        .input_ids
        .iter()
        .zip(&sequence.completion_mask)
        .map(|(&id, &m)| if m == 1 { i64::from(id) } else { IGNORE_INDEX })
        .collect()
}

/// Labels a forward pass predicts (position 0 never is).
fn scored(sequence: &MaskedSequence) -> usize {
    sequence
        .completion_mask
        .iter()
        .skip(1)
        .filter(|m| **m == 1)
        .count()
}

/// One line of legacy `sft_packed.jsonl`.
#[derive(Serialize)]
struct PackedJson<'a> {
    split: &'static str,
    index: usize,
    stream_start: usize,
    input_ids: &'a [u32],
    segments: &'a [Segment],
}

impl<'a> PackedJson<'a> {
    fn new(sequence: &'a PackedSequence, role: SplitRole, index: usize) -> Self {
        PackedJson {
            split: role_name(role),
            index,
            stream_start: sequence.stream_start,
            input_ids: &sequence.input_ids,
            segments: &sequence.segments,
        }
    }
}
