//! `align data`: what the trainer will see, one JSON object per row, with
//! the field names of the fixture's `expected/tokenized.jsonl` (DPO) and
//! `expected/sft_tokenized.jsonl` (SFT), in dataset order (after the mixer,
//! before the sampler's per-epoch shuffle), dropped rows included.
//! `compat: trl-0.7` stages are written by `dump_trl07` with the legacy
//! fixture's field names.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::recipe::{Recipe, SplitRole, StageConfig, StageKind, split_role};

use super::dump_summary::{DataSummary, LengthStats, write_line};
use super::dump_trl07;
use super::error::DataError;
use super::prepare::{Preprocessor, prepare_dpo, prepare_sft, role_name};
use super::schema::Message;
use super::tokenize::dpo::{DpoExample, Side};
use super::tokenize::sft::SftExample;

/// Load `config` (with `--set` overrides), prepare one split of its stage
/// and write it as JSONL to `out`.
///
/// `stage` picks the stage kind as `align sft`/`align dpo` would (a single
/// config is read as that kind; of a chained recipe that stage is dumped);
/// `None` infers it, or takes a chain's first stage. `split` is `train`
/// (default), `test`/`eval`, or a split name of the recipe (its role is
/// taken from the name, as the handbook does). `limit` caps the rows written.
pub fn dump_rows(
    config: &Path,
    overrides: &[String],
    stage: Option<StageKind>,
    split: Option<&str>,
    limit: Option<usize>,
    out: &mut dyn Write,
) -> Result<DataSummary, DataError> {
    let recipe = Recipe::load_as(config, overrides, stage)?;
    let chosen = &recipe.stages[0];
    let role = parse_split(chosen, split)?;
    let mut summary = dump_stage(chosen, role, limit, out)?;
    summary.warnings = recipe.warnings;
    Ok(summary)
}

/// Prepare one split of `stage` and write it as JSONL to `out`.
pub fn dump_stage(
    stage: &StageConfig,
    role: SplitRole,
    limit: Option<usize>,
    out: &mut dyn Write,
) -> Result<DataSummary, DataError> {
    let pre = Preprocessor::from_stage(stage)?;
    let limit = limit.unwrap_or(usize::MAX);
    let mut summary = DataSummary {
        stage: stage.kind,
        split: role_name(role),
        rows: 0,
        dropped: 0,
        truncated: 0,
        written: 0,
        max_length: pre.max_length,
        lengths: None,
        warnings: Vec::new(),
    };
    let mut lengths = Vec::new();
    match stage.kind {
        StageKind::Dpo if pre.is_trl07() => {
            dump_trl07::dump_dpo(stage, &pre, role, limit, out, &mut summary)?;
        }
        StageKind::Sft if pre.is_trl07() => {
            dump_trl07::dump_sft(stage, &pre, role, limit, out, &mut summary)?;
        }
        StageKind::Dpo => {
            let split = prepare_dpo(stage, &pre, role)?;
            let mut kept_index = 0;
            for (i, row) in split.rows.iter().enumerate() {
                let json = DpoRowJson::new(&row.example, row.dropped.as_deref(), kept_index, &pre);
                if row.dropped.is_none() {
                    kept_index += 1;
                    lengths.push(
                        json.chosen_len.max(json.rejected_len).unwrap_or(0) + json.prompt_ids.len(),
                    );
                    summary.truncated += usize::from(
                        json.chosen_truncated == Some(true)
                            || json.rejected_truncated == Some(true),
                    );
                }
                if i < limit {
                    write_line(out, &json)?;
                    summary.written += 1;
                }
            }
            summary.rows = split.rows.len();
            summary.dropped = split.dropped_count();
        }
        StageKind::Sft => {
            let split = prepare_sft(stage, &pre, role)?;
            for (i, row) in split.rows.iter().enumerate() {
                if row.dropped.is_none() {
                    lengths.push(row.example.full_length);
                    summary.truncated += usize::from(row.example.truncated);
                }
                if i < limit {
                    write_line(out, &SftRowJson::new(&row.example, row.dropped.as_deref()))?;
                    summary.written += 1;
                }
            }
            summary.rows = split.rows.len();
            summary.dropped = split.dropped_count();
        }
    }
    if summary.lengths.is_none() {
        summary.lengths = LengthStats::of(lengths);
    }
    out.flush().map_err(DataError::Output)?;
    Ok(summary)
}

/// `train` (default), `test`/`eval`/`validation`, or a recipe split name.
fn parse_split(stage: &StageConfig, split: Option<&str>) -> Result<SplitRole, DataError> {
    match split.unwrap_or("train") {
        "train" => Ok(SplitRole::Train),
        "test" | "eval" | "validation" => Ok(SplitRole::Test),
        name if stage.data.dataset_splits.iter().any(|s| s == name) => {
            split_role(name).ok_or_else(|| {
                DataError::Unsupported(format!(
                    "split `{name}` is neither a train nor a test split"
                ))
            })
        }
        name => Err(DataError::Unsupported(format!(
            "unknown split `{name}`: use train, test, or one of the recipe's dataset_splits ({})",
            stage.data.dataset_splits.join(", ")
        ))),
    }
}

/// One line of `tokenized.jsonl`.
#[derive(Serialize)]
struct DpoRowJson<'a> {
    dataset: &'a str,
    row: usize,
    train_index: Option<usize>,
    dropped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_messages: Option<&'a [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_messages: Option<&'a [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_messages: Option<&'a [Message]>,
    prompt_text: &'a str,
    prompt_chosen_text: &'a str,
    prompt_rejected_text: &'a str,
    prompt_ids: &'a [u32],
    chosen_ids: &'a [u32],
    rejected_ids: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_input_ids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_completion_mask: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_input_ids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_completion_mask: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chosen_completion_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_completion_tokens: Option<usize>,
}

impl<'a> DpoRowJson<'a> {
    /// A kept row gets what the model sees; a dropped row only what TRL
    /// stored before filtering it out.
    fn new(
        example: &'a DpoExample,
        dropped: Option<&'a str>,
        kept_index: usize,
        pre: &Preprocessor,
    ) -> Self {
        let messages = example.messages.as_ref();
        let mut json = DpoRowJson {
            dataset: &example.location.dataset,
            row: example.location.row,
            train_index: dropped.is_none().then_some(kept_index),
            dropped: dropped.is_some(),
            drop_reason: dropped,
            prompt_messages: messages.map(|m| m.prompt.as_slice()),
            chosen_messages: messages.map(|m| m.chosen.as_slice()),
            rejected_messages: messages.map(|m| m.rejected.as_slice()),
            prompt_text: &example.prompt_text,
            prompt_chosen_text: &example.prompt_chosen_text,
            prompt_rejected_text: &example.prompt_rejected_text,
            prompt_ids: &example.prompt_ids,
            chosen_ids: &example.chosen_ids,
            rejected_ids: &example.rejected_ids,
            chosen_input_ids: None,
            chosen_completion_mask: None,
            rejected_input_ids: None,
            rejected_completion_mask: None,
            prompt_len: None,
            chosen_len: None,
            rejected_len: None,
            chosen_truncated: None,
            rejected_truncated: None,
            chosen_completion_tokens: None,
            rejected_completion_tokens: None,
        };
        if dropped.is_some() {
            return json;
        }
        let chosen = example.sequence(Side::Chosen, pre.max_length, pre.truncation);
        let rejected = example.sequence(Side::Rejected, pre.max_length, pre.truncation);
        let full = example.prompt_ids.len();
        json.prompt_len = Some(full);
        json.chosen_len = Some(example.chosen_ids.len());
        json.rejected_len = Some(example.rejected_ids.len());
        json.chosen_truncated = Some(chosen.input_ids.len() < full + example.chosen_ids.len());
        json.rejected_truncated =
            Some(rejected.input_ids.len() < full + example.rejected_ids.len());
        json.chosen_completion_tokens = Some(chosen.completion_tokens());
        json.rejected_completion_tokens = Some(rejected.completion_tokens());
        json.chosen_input_ids = Some(chosen.input_ids);
        json.chosen_completion_mask = Some(chosen.completion_mask);
        json.rejected_input_ids = Some(rejected.input_ids);
        json.rejected_completion_mask = Some(rejected.completion_mask);
        json
    }
}

/// One line of `sft_tokenized.jsonl`.
#[derive(Serialize)]
struct SftRowJson<'a> {
    dataset: &'a str,
    row: usize,
    text: &'a str,
    input_ids: &'a [u32],
    labels: &'a [i64],
    truncated: bool,
    dropped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
}

impl<'a> SftRowJson<'a> {
    fn new(example: &'a SftExample, dropped: Option<&'a str>) -> Self {
        SftRowJson {
            dataset: &example.location.dataset,
            row: example.location.row,
            text: &example.text,
            input_ids: &example.input_ids,
            labels: &example.labels,
            truncated: example.truncated,
            dropped: dropped.is_some(),
            drop_reason: dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let stats = LengthStats::of((1..=100).collect()).expect("non-empty");
        assert_eq!(
            (stats.min, stats.p50, stats.p90, stats.p99, stats.max),
            (1, 50, 90, 99, 100)
        );
        assert_eq!(LengthStats::of(Vec::new()), None);
    }
}
