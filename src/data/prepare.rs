//! A stage's data, end to end: the tokenizer and chat template of the
//! stage, the mixed rows of a split, and the TRL preparation of each row
//! (tokenize, drop, truncate). The trainer and `align data` both start here,
//! so what `align data` shows is what the trainer sees.

use std::path::PathBuf;

use crate::recipe::{Compat, SplitRole, StageConfig, StageKind, TruncationMode};

use super::chat::ChatTemplate;
use super::error::DataError;
use super::hub::{RepoKind, resolve};
use super::mixer::load_role;
use super::schema::{RawRow, RecordKind};
use super::tokenize::TokenizeContext;
use super::tokenize::dpo::{DpoExample, tokenize_pair};
use super::tokenize::sft::{SftExample, SftOptions, tokenize_sft};
use super::tokenizer::TextTokenizer;

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
}

impl Preprocessor {
    /// Load the tokenizer folder (`tokenizer_name_or_path`, else the model)
    /// and compile the chat template (the recipe's `chat_template` wins
    /// over the tokenizer's, as in the handbook).
    pub fn from_stage(stage: &StageConfig) -> Result<Preprocessor, DataError> {
        if stage.ext.compat == Compat::Trl07 {
            return Err(DataError::Unsupported(
                "compat: trl-0.7 data preparation (TRL 0.7.10 tokenize_row, packing) is not implemented yet".into(),
            ));
        }
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
        })
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

/// Read, mix and prepare the DPO rows of `role`.
pub fn prepare_dpo(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<DpoSplit, DataError> {
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

/// Read, mix and prepare the SFT rows of `role`.
pub fn prepare_sft(
    stage: &StageConfig,
    pre: &Preprocessor,
    role: SplitRole,
) -> Result<SftSplit, DataError> {
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
    non_empty(
        PreparedSplit { role, rows },
        "no label left after truncation",
    )
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
