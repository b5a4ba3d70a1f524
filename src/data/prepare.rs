//! A stage's data, end to end: the tokenizer and chat template of the
//! stage, the mixed rows of a split, and the TRL preparation of each row
//! (tokenize, drop, truncate). The trainer and `align data` both start here,
//! so what `align data` shows is what the trainer sees.
//!
//! The rules are chosen once, from `compat`, when the [`Preprocessor`] is
//! built: TRL 1.x (`tokenize::dpo`, `tokenize::sft`) or the March-2024 stack
//! (`tokenize::trl07_dpo`, `tokenize::trl07_sft` + `tokenize::pack`). Both
//! give the trainer the same example types.

use std::path::PathBuf;

use crate::recipe::{Compat, SplitRole, StageConfig, StageKind, TruncationMode};

use super::chat::ChatTemplate;
use super::error::DataError;
use super::hub::{RepoKind, resolve};
use super::mixer::load_role;
use super::schema::{RawRow, RecordKind};
use super::tokenize::TokenizeContext;
use super::tokenize::dpo::{DpoExample, tokenize_pair};
use super::tokenize::pack::{PackOptions, PackedSequence, pack};
use super::tokenize::sft::{SftExample, SftOptions, tokenize_sft};
use super::tokenize::trl07_dpo::{Trl07DpoOptions, Trl07Pair, tokenize_pair_trl07};
use super::tokenize::trl07_sft::{Trl07SftOptions, Trl07SftText, render_sft_trl07};
use super::tokenizer::TextTokenizer;

/// `SFTTrainer` 0.7.10 defaults the handbook never changes.
const TRL07_NUM_OF_SEQUENCES: usize = 1024;
const TRL07_CHARS_PER_TOKEN: f64 = 3.6;

/// Tokenizer, chat template and limits of a stage, loaded once.
pub struct Preprocessor {
    pub kind: StageKind,
    pub tokenizer: TextTokenizer,
    pub template: Option<ChatTemplate>,
    pub pad_token_id: u32,
    pub max_length: Option<usize>,
    /// DPO: the recipe's `truncation_mode`; SFT: always keep_start.
    pub truncation: TruncationMode,
    sft_options: SftOptions,
    text_field: String,
    rules: Rules,
}

/// Which stack's rules prepare the rows, chosen once from `compat`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rules {
    Trl1,
    Trl07Dpo(Trl07DpoOptions),
    Trl07Sft(Trl07SftOptions, PackOptions),
}

impl Preprocessor {
    /// Load the tokenizer folder (`tokenizer_name_or_path`, else the model)
    /// and compile the chat template (the recipe's `chat_template` wins
    /// over the tokenizer's, as in the handbook).
    pub fn from_stage(stage: &StageConfig) -> Result<Preprocessor, DataError> {
        if stage.kind == StageKind::Sft && stage.sft.assistant_only_loss {
            return Err(DataError::Unsupported(
                "assistant_only_loss needs {% generation %} template markers, which are not supported".into(),
            ));
        }
        let dir = resolve(stage.model.tokenizer_source(), RepoKind::Model)?;
        let tokenizer = TextTokenizer::load(&dir)?;
        let template = match (&stage.data.chat_template, &tokenizer.chat_template) {
            (Some(source), _) => {
                let origin = format!("{}: key `chat_template`", stage.source.display());
                Some(ChatTemplate::new(
                    source,
                    &origin,
                    tokenizer.special.clone(),
                )?)
            }
            (None, Some(source)) => {
                let origin = dir.join("tokenizer_config.json").display().to_string();
                Some(ChatTemplate::new(
                    source,
                    &origin,
                    tokenizer.special.clone(),
                )?)
            }
            (None, None) => None,
        };
        let pad_token_id = tokenizer.pad_token_id(stage.data.pad_token.as_deref())?;
        let template_source = stage
            .data
            .chat_template
            .as_deref()
            .or(tokenizer.chat_template.as_deref());
        let rules = match stage.ext.compat {
            Compat::Trl1 => Rules::Trl1,
            Compat::Trl07 => trl07_rules(stage, &tokenizer, template_source)?,
        };
        Ok(Preprocessor {
            kind: stage.kind,
            tokenizer,
            template,
            pad_token_id,
            max_length: stage.data.max_length,
            truncation: match stage.kind {
                StageKind::Dpo => stage.dpo.truncation_mode,
                StageKind::Sft => TruncationMode::KeepStart,
            },
            sft_options: SftOptions {
                completion_only_loss: stage.sft.completion_only_loss,
            },
            text_field: stage.sft.dataset_text_field.clone(),
            rules,
        })
    }

    /// Whether rows follow the March-2024 stack (`compat: trl-0.7`).
    pub fn is_trl07(&self) -> bool {
        self.rules != Rules::Trl1
    }

    /// Where the tokenizer was read from.
    pub fn tokenizer_dir(&self) -> PathBuf {
        self.tokenizer.dir.clone()
    }

    fn context(&self) -> TokenizeContext<'_> {
        TokenizeContext {
            tokenizer: &self.tokenizer,
            template: self.template.as_ref(),
            max_length: self.max_length,
            truncation: self.truncation,
        }
    }

    fn record_kind(&self) -> RecordKind {
        match self.kind {
            StageKind::Dpo => RecordKind::Preference,
            StageKind::Sft => RecordKind::Sft {
                text_field: self.text_field.clone(),
            },
        }
    }
}

/// One row of a prepared split, kept or dropped (with TRL's reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared<E> {
    pub example: E,
    pub dropped: Option<String>,
}

/// A prepared split: every row in dataset order, dropped ones included.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSplit<E> {
    pub role: SplitRole,
    pub rows: Vec<Prepared<E>>,
}

impl<E: Clone> PreparedSplit<E> {
    /// The rows the trainer uses, in order (the sampler walks these).
    pub fn examples(&self) -> Vec<E> {
        self.kept().cloned().collect()
    }

    /// The kept rows, borrowed.
    pub fn kept(&self) -> impl Iterator<Item = &E> {
        self.rows
            .iter()
            .filter(|r| r.dropped.is_none())
            .map(|r| &r.example)
    }

    /// How many rows TRL's filter removed.
    pub fn dropped_count(&self) -> usize {
        self.rows.iter().filter(|r| r.dropped.is_some()).count()
    }
}

/// Preference pairs of one split, prepared by TRL 1.x's rules.
pub type DpoSplit = PreparedSplit<DpoExample>;
/// SFT examples of one split, prepared by TRL 1.x's rules.
pub type SftSplit = PreparedSplit<SftExample>;

/// Read, mix and prepare the DPO rows of `role` by the stage's rules.
pub fn prepare_dpo(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<DpoSplit, DataError> {
    if let Rules::Trl07Dpo(_) = pre.rules {
        let split = prepare_dpo_trl07(stage, pre, role)?;
        let rows = split
            .rows
            .into_iter()
            .map(|row| Prepared {
                example: row.example.example,
                dropped: row.dropped,
            })
            .collect();
        return Ok(PreparedSplit { role, rows });
    }
    let ctx = pre.context();
    let rows = load_rows(stage, pre, role)?
        .iter()
        .map(|raw| {
            let example = tokenize_pair(&raw.record, &raw.location, &ctx)?;
            let dropped = example.drop_reason(pre.max_length, pre.truncation);
            Ok(Prepared { example, dropped })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    non_empty(
        PreparedSplit { role, rows },
        "a prompt of max_length tokens or more",
    )
}

/// Read, mix and prepare the SFT rows of `role` by the stage's rules; with
/// `compat: trl-0.7` every example is one packed sequence.
pub fn prepare_sft(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<SftSplit, DataError> {
    if let Rules::Trl07Sft(..) = pre.rules {
        let packed = prepare_sft_trl07(stage, pre, role)?;
        let rows = packed
            .packed
            .iter()
            .map(|sequence| Prepared {
                example: packed.example(sequence),
                dropped: None,
            })
            .collect();
        return Ok(PreparedSplit { role, rows });
    }
    let ctx = pre.context();
    let rows = load_rows(stage, pre, role)?
        .iter()
        .map(|raw| {
            let example = tokenize_sft(&raw.record, &raw.location, &ctx, pre.sft_options)?;
            let dropped = (example.scored_tokens() == 0)
                .then(|| "no label left after truncation".to_string());
            Ok(Prepared { example, dropped })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    let rows = match (stage.sft.packing, pre.max_length) {
        (true, Some(max_length)) => pack_rows(rows, max_length),
        _ => rows,
    };
    non_empty(
        PreparedSplit { role, rows },
        "no label left after truncation",
    )
}

/// Preference pairs of one split, prepared by TRL 0.7.10's rules.
pub type Trl07DpoSplit = PreparedSplit<Trl07Pair>;

/// Read, mix and prepare the DPO rows of `role` by TRL 0.7.10's rules
/// (none is ever dropped), keeping what `align data` shows of each.
pub fn prepare_dpo_trl07(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<Trl07DpoSplit, DataError> {
    let Rules::Trl07Dpo(options) = pre.rules else {
        return Err(DataError::Unsupported(
            "TRL 0.7.10 preference rows need a DPO stage with compat: trl-0.7".into(),
        ));
    };
    let ctx = pre.context();
    let rows = load_rows(stage, pre, role)?
        .iter()
        .map(|raw| {
            let example = tokenize_pair_trl07(&raw.record, &raw.location, &ctx, &options)?;
            Ok(Prepared {
                example,
                dropped: None,
            })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    non_empty(PreparedSplit { role, rows }, "")
}

/// An SFT split packed as TRL 0.7.10's `ConstantLengthDataset` packs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedSplit {
    pub role: SplitRole,
    /// Every conversation, rendered, in dataset order.
    pub texts: Vec<Trl07SftText>,
    /// The packed sequences, in the order training reads them.
    pub packed: Vec<PackedSequence>,
}

impl PackedSplit {
    /// A packed sequence as a training example: every token is a label.
    /// Its location is that of the conversation it starts in; it has no
    /// text of its own.
    pub fn example(&self, sequence: &PackedSequence) -> SftExample {
        let first_row = sequence.segments.first().map_or(0, |s| s.row);
        SftExample {
            location: self.texts[first_row].location.clone(),
            text: String::new(),
            input_ids: sequence.input_ids.clone(),
            labels: sequence.input_ids.iter().map(|&t| i64::from(t)).collect(),
            truncated: false,
            full_length: sequence.input_ids.len(),
            // TRL 0.7.10 lets packed conversations attend to each other.
            documents: Vec::new(),
        }
    }
}

/// Read, mix, render and pack the SFT rows of `role` (TRL 0.7.10 rules).
pub fn prepare_sft_trl07(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<PackedSplit, DataError> {
    let Rules::Trl07Sft(options, pack_options) = pre.rules else {
        return Err(DataError::Unsupported(
            "packed SFT sequences need an SFT stage with compat: trl-0.7".into(),
        ));
    };
    let ctx = pre.context();
    let texts = load_rows(stage, pre, role)?
        .iter()
        .map(|raw| render_sft_trl07(&raw.record, &raw.location, &ctx, options))
        .collect::<Result<Vec<_>, DataError>>()?;
    let documents: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(row, text)| text.document(row))
        .collect();
    let packed = pack(&documents, &pack_options);
    if packed.is_empty() {
        return Err(DataError::EmptySplit {
            role: role_name(role),
            dropped: 0,
            total: texts.len(),
            reason: format!(
                "packing {} tokens into sequences of {} leaves none (TRL 0.7.10 drops each buffer's incomplete tail)",
                documents.iter().map(|d| d.ids.len()).sum::<usize>(),
                pack_options.seq_length
            ),
        });
    }
    Ok(PackedSplit {
        role,
        texts,
        packed,
    })
}

/// The `compat: trl-0.7` rules of a stage, from its keys and tokenizer.
fn trl07_rules(
    stage: &StageConfig,
    tokenizer: &TextTokenizer,
    template_source: Option<&str>,
) -> Result<Rules, DataError> {
    let unsupported =
        |message: &str| DataError::Unsupported(format!("{}: {message}", stage.source.display()));
    let template = template_source.ok_or_else(|| {
        unsupported(
            "compat trl-0.7 needs a chat template (the handbook renders every row with one)",
        )
    })?;
    // handbook `maybe_insert_system_message`: only when the template mentions a system turn.
    let insert_system = stage.data.auto_insert_empty_system_msg.unwrap_or(true)
        && (template.contains("system") || template.contains("<|im_start|>"));
    let special_id = |name: &str, token: &Option<String>| {
        token
            .as_deref()
            .and_then(|t| tokenizer.token_id(t))
            .ok_or_else(|| {
                unsupported(&format!(
                    "compat trl-0.7 needs the tokenizer's {name} token"
                ))
            })
    };
    let eos = special_id("eos", &tokenizer.special.eos)?;
    let max_length = stage
        .data
        .max_length
        .ok_or_else(|| unsupported("compat trl-0.7 needs max_length"))?;
    match stage.kind {
        StageKind::Dpo => {
            let max_prompt_length = stage
                .dpo
                .max_prompt_length
                .ok_or_else(|| unsupported("compat trl-0.7 needs max_prompt_length"))?;
            if max_prompt_length > max_length {
                return Err(unsupported(&format!(
                    "key `max_prompt_length`: {max_prompt_length} exceeds max_length {max_length} (TRL 0.7.10 would cut answers to a negative length)"
                )));
            }
            Ok(Rules::Trl07Dpo(Trl07DpoOptions {
                max_length,
                max_prompt_length,
                truncation: stage.dpo.truncation_mode,
                bos: special_id("bos", &tokenizer.special.bos)?,
                eos,
                insert_system,
            }))
        }
        StageKind::Sft => {
            let kwargs = stage.sft.dataset_kwargs.as_ref();
            let flag = |get: fn(&crate::recipe::DatasetKwargs) -> Option<bool>| {
                kwargs.and_then(get).unwrap_or(true)
            };
            Ok(Rules::Trl07Sft(
                Trl07SftOptions {
                    insert_system,
                    add_special_tokens: flag(|k| k.add_special_tokens),
                },
                PackOptions {
                    seq_length: max_length,
                    num_of_sequences: TRL07_NUM_OF_SEQUENCES,
                    chars_per_token: TRL07_CHARS_PER_TOKEN,
                    concat_token: flag(|k| k.append_concat_token).then_some(eos),
                    shuffle_seed: stage.ext.packing_shuffle.then_some(stage.training.seed),
                },
            ))
        }
    }
}

fn load_rows(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<Vec<RawRow>, DataError> {
    let plan = stage.data.plan().map_err(|(key, message)| {
        DataError::Unsupported(format!(
            "{}: key `{key}`: {message}",
            stage.source.display()
        ))
    })?;
    load_role(&plan, role, stage.ext.dataset_shuffle, &pre.record_kind())
}

fn non_empty<E>(split: PreparedSplit<E>, reason: &str) -> Result<PreparedSplit<E>, DataError> {
    let dropped = split.rows.iter().filter(|r| r.dropped.is_some()).count();
    if dropped == split.rows.len() {
        return Err(DataError::EmptySplit {
            role: role_name(split.role),
            dropped,
            total: split.rows.len(),
            reason: if split.rows.is_empty() {
                "the split has no rows".into()
            } else {
                reason.into()
            },
        });
    }
    Ok(split)
}

/// `train` or `test`.
pub fn role_name(role: SplitRole) -> &'static str {
    match role {
        SplitRole::Train => "train",
        SplitRole::Test => "test",
    }
}

/// `packing: true` (trl-1): the kept rows packed by Best Fit Decreasing.
fn pack_rows(rows: Vec<Prepared<SftExample>>, max_length: usize) -> Vec<Prepared<SftExample>> {
    let kept: Vec<SftExample> = rows
        .into_iter()
        .filter(|row| row.dropped.is_none())
        .map(|row| row.example)
        .collect();
    crate::data::tokenize::bfd::pack_bfd(&kept, max_length)
        .into_iter()
        .map(|example| Prepared {
            example,
            dropped: None,
        })
        .collect()
}
