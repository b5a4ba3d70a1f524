//! A model's tokenizer files: `tokenizer.json` (run by the HF `tokenizers`
//! crate, the same code as Python's fast tokenizers), the special tokens
//! and the chat template of `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use super::error::DataError;

/// The special tokens a chat template and the collator need, by text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// A loaded tokenizer folder.
pub struct TextTokenizer {
    pub dir: PathBuf,
    inner: Tokenizer,
    pub special: SpecialTokens,
    /// From `tokenizer_config.json` (`chat_template`) or `chat_template.jinja`.
    pub chat_template: Option<String>,
}

impl TextTokenizer {
    /// Load `dir/tokenizer.json` and, when present, `tokenizer_config.json`
    /// and `special_tokens_map.json` (the config wins, as transformers).
    pub fn load(dir: &Path) -> Result<TextTokenizer, DataError> {
        let file = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&file).map_err(|e| DataError::Tokenizer {
            path: file.clone(),
            message: format!("cannot load tokenizer: {e}"),
        })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let map = read_json(&dir.join("special_tokens_map.json"))?;
        let token = |key: &str| {
            [&config, &map]
                .into_iter()
                .flatten()
                .find_map(|json| token_text(json.get(key)?))
        };
        let special = SpecialTokens {
            bos: token("bos_token"),
            eos: token("eos_token"),
            pad: token("pad_token"),
            unk: token("unk_token"),
        };
        let chat_template = match config
            .as_ref()
            .and_then(|c| template_text(c.get("chat_template")?))
        {
            Some(template) => Some(template),
            None => read_optional(&dir.join("chat_template.jinja"))?,
        };
        Ok(TextTokenizer {
            dir: dir.to_path_buf(),
            inner,
            special,
            chat_template,
        })
    }

    /// Token ids of `text` with no special tokens added: what
    /// `apply_chat_template(tokenize=True)` does, since the template writes
    /// `<bos>`/`<eos>` as text and they match the added special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.encode_impl(text, false)
    }

    /// Token ids of `text` with the tokenizer's post-processor (e.g. a
    /// leading `<bos>`): `tokenizer(text)` in Python, used for plain-text data.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, String> {
        self.encode_impl(text, true)
    }

    fn encode_impl(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| format!("tokenizer failed: {e}"))
    }

    /// The id of a token given by its text.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included (`len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A byte-fallback token (`<0xAB>`): one byte of a character the
    /// vocabulary lacks, which decodes only together with its neighbours.
    pub fn is_byte_token(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|token| {
            token.len() == 6 && token.starts_with("<0x") && token.ends_with('>')
        })
    }

    /// Decode ids back to text, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }

    /// The padding id: `pad_token` of the recipe, else the tokenizer's
    /// `pad_token`, else its `eos_token` (TRL's fallback).
    pub fn pad_token_id(&self, recipe_pad: Option<&str>) -> Result<u32, DataError> {
        let text = recipe_pad
            .map(str::to_string)
            .or_else(|| self.special.pad.clone())
            .or_else(|| self.special.eos.clone())
            .ok_or_else(|| {
                self.error("no pad_token and no eos_token: set `pad_token` in the recipe")
            })?;
        self.token_id(&text)
            .ok_or_else(|| self.error(&format!("padding token `{text}` is not in the vocabulary")))
    }

    /// The id of the EOS token, if the tokenizer has one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.special.eos.as_deref().and_then(|t| self.token_id(t))
    }

    fn error(&self, message: &str) -> DataError {
        DataError::Tokenizer {
            path: self.dir.clone(),
            message: message.to_string(),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, DataError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, DataError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("invalid JSON: {e}"),
        })
}

/// A special token is a string or an `AddedToken` object with `content`.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of named templates of which
/// transformers uses `default`.
fn template_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(|item| {
            (item.get("name")?.as_str()? == "default")
                .then(|| item.get("template")?.as_str().map(str::to_string))
                .flatten()
        }),
        _ => None,
    }
}
