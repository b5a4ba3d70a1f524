//! Gemma's architecture hyper-parameters, read from a Hugging Face `config.json`.
//!
//! transformers has renamed several keys over the years; both spellings are
//! accepted so that the published Gemma v1 configs (2024) and files written
//! by transformers 5 load alike.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::ConfigError;

/// The MLP activation. transformers 4.39+ reads `hidden_activation` and, when it
/// is absent, uses the tanh approximation whatever `hidden_act` says (PR 29402);
/// transformers 4.38 read `hidden_act` (so `"gelu"` meant the exact erf GELU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: `x * Φ(x)` with the error function.
    GeluExact,
    /// `gelu_pytorch_tanh`: `F.gelu(x, approximate="tanh")`.
    GeluTanh,
}

impl Activation {
    /// The transformers name of this activation.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluExact => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }

    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluExact),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(format!(
                "unsupported activation {other:?} (expected gelu or gelu_pytorch_tanh)"
            )),
        }
    }
}

/// Which transformers release's rule picks the activation from `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ActivationRule {
    /// transformers >= 4.39: `hidden_activation`, else the tanh approximation.
    #[default]
    Modern,
    /// transformers 4.38: `hidden_act` decides.
    Transformers438,
}

/// Gemma v1 hyper-parameters (transformers' `GemmaConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Independent of `hidden_size / num_attention_heads` (gemma-7b: 256 vs 192).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The dtype the checkpoint was saved in (`torch_dtype`/`dtype`), e.g. `bfloat16`.
    pub torch_dtype: Option<String>,
    /// The file as read, so that saving keeps keys this crate does not model.
    pub raw: Value,
}

/// The subset of `config.json` this crate reads, with both historical spellings.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    bos_token_id: Option<TokenId>,
    eos_token_id: Option<TokenId>,
    pad_token_id: Option<TokenId>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

/// Token ids in configs are an integer or a list (the first is used).
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenId {
    One(u32),
    Many(Vec<u32>),
}

impl TokenId {
    fn first(self) -> Option<u32> {
        match self {
            TokenId::One(id) => Some(id),
            TokenId::Many(ids) => ids.first().copied(),
        }
    }
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    8192
}
fn default_true() -> bool {
    true
}

impl GemmaConfig {
    /// Reads `config.json`, applying transformers' current activation rule.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_with_rule(path, ActivationRule::Modern)
    }

    /// Reads `config.json` with the given transformers activation rule.
    pub fn from_file_with_rule(path: &Path, rule: ActivationRule) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json_with_rule(&text, rule).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of a `config.json` (modern activation rule).
    pub fn from_json(text: &str) -> Result<Self, String> {
        Self::from_json_with_rule(text, ActivationRule::Modern)
    }

    /// Parses the text of a `config.json`.
    pub fn from_json_with_rule(text: &str, rule: ActivationRule) -> Result<Self, String> {
        let raw_value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let raw: RawConfig =
            serde_json::from_value(raw_value.clone()).map_err(|e| e.to_string())?;
        match raw.model_type.as_deref() {
            Some("gemma") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported model_type {other:?}: align trains Gemma v1 (model_type \"gemma\")"
                ));
            }
            None => return Err("missing key model_type (expected \"gemma\")".into()),
        }
        if raw.attention_bias {
            return Err("attention_bias: true is not supported (Gemma v1 has no biases)".into());
        }
        if let Some(kind) = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref())
            && kind != "default"
        {
            return Err(format!("unsupported rope_type {kind:?} (only \"default\")"));
        }
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(10_000.0);
        let activation = pick_activation(
            raw.hidden_act.as_deref(),
            raw.hidden_activation.as_deref(),
            rule,
        )?;
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})"
            ));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if !head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim must be even for rotary embeddings, got {head_dim}"
            ));
        }
        Ok(GemmaConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings,
            activation,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: raw.bos_token_id.and_then(TokenId::first),
            eos_token_id: raw.eos_token_id.and_then(TokenId::first),
            pad_token_id: raw.pad_token_id.and_then(TokenId::first),
            torch_dtype: raw.torch_dtype.or(raw.dtype),
            raw: raw_value,
        })
    }

    /// Number of parameters, counting the tied embedding once (as transformers'
    /// `num_parameters()` does).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attention = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * self.intermediate_size;
        let norms = 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * (attention + mlp + norms) + h
    }

    /// Keys of `config.json` as this crate writes them back: the original file's
    /// keys kept, the architecture values set from `self`, both spellings of the
    /// renamed keys present so old and new transformers read the same model.
    pub fn to_json(&self) -> Value {
        let mut value = match &self.raw {
            Value::Object(map) => Value::Object(map.clone()),
            _ => Value::Object(Default::default()),
        };
        let map = value.as_object_mut().expect("config is a JSON object");
        let mut set = |key: &str, v: Value| {
            map.insert(key.to_string(), v);
        };
        set("model_type", "gemma".into());
        set("architectures", serde_json::json!(["GemmaForCausalLM"]));
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("head_dim", self.head_dim.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set("rope_theta", self.rope_theta.into());
        set(
            "rope_parameters",
            serde_json::json!({"rope_theta": self.rope_theta, "rope_type": "default"}),
        );
        set(
            "max_position_embeddings",
            self.max_position_embeddings.into(),
        );
        set("hidden_act", self.activation.hf_name().into());
        set("hidden_activation", self.activation.hf_name().into());
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set("attention_bias", false.into());
        if let Some(dtype) = &self.torch_dtype {
            set("torch_dtype", dtype.clone().into());
            set("dtype", dtype.clone().into());
        }
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                set(key, id.into());
            }
        }
        value
    }
}

fn pick_activation(
    hidden_act: Option<&str>,
    hidden_activation: Option<&str>,
    rule: ActivationRule,
) -> Result<Activation, String> {
    match rule {
        ActivationRule::Modern => match hidden_activation {
            Some(name) => Activation::parse(name),
            None => Ok(Activation::GeluTanh),
        },
        ActivationRule::Transformers438 => Activation::parse(hidden_act.unwrap_or("gelu")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/gemma-2b's config.json (2024).
    const GEMMA_2B: &str = r#"{"architectures":["GemmaForCausalLM"],"bos_token_id":2,"eos_token_id":1,
        "head_dim":256,"hidden_act":"gelu","hidden_size":2048,"initializer_range":0.02,
        "intermediate_size":16384,"max_position_embeddings":8192,"model_type":"gemma",
        "num_attention_heads":8,"num_hidden_layers":18,"num_key_value_heads":1,"pad_token_id":0,
        "rms_norm_eps":1e-06,"rope_theta":10000.0,"torch_dtype":"bfloat16","vocab_size":256000}"#;

    /// google/gemma-7b's config.json (2024).
    const GEMMA_7B: &str = r#"{"architectures":["GemmaForCausalLM"],"bos_token_id":2,"eos_token_id":1,
        "head_dim":256,"hidden_act":"gelu","hidden_size":3072,"initializer_range":0.02,
        "intermediate_size":24576,"max_position_embeddings":8192,"model_type":"gemma",
        "num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":16,"pad_token_id":0,
        "rms_norm_eps":1e-06,"rope_theta":10000.0,"torch_dtype":"bfloat16","vocab_size":256000}"#;

    #[test]
    fn gemma_2b_has_2_51_billion_parameters() {
        let config = GemmaConfig::from_json(GEMMA_2B).unwrap();
        // transformers: GemmaForCausalLM(gemma-2b).num_parameters() == 2_506_172_416
        assert_eq!(config.num_parameters(), 2_506_172_416);
        assert_eq!(config.num_key_value_heads, 1);
    }

    #[test]
    fn gemma_7b_has_8_54_billion_parameters() {
        let config = GemmaConfig::from_json(GEMMA_7B).unwrap();
        // transformers: GemmaForCausalLM(gemma-7b).num_parameters() == 8_537_680_896
        assert_eq!(config.num_parameters(), 8_537_680_896);
        assert_eq!(config.head_dim, 256);
        assert_ne!(
            config.head_dim,
            config.hidden_size / config.num_attention_heads
        );
    }

    #[test]
    fn activation_follows_the_transformers_release() {
        // Published configs say "gelu"; transformers >= 4.39 uses the tanh form anyway.
        let modern = GemmaConfig::from_json(GEMMA_7B).unwrap();
        assert_eq!(modern.activation, Activation::GeluTanh);
        let legacy =
            GemmaConfig::from_json_with_rule(GEMMA_7B, ActivationRule::Transformers438).unwrap();
        assert_eq!(legacy.activation, Activation::GeluExact);
    }

    #[test]
    fn rejects_other_architectures() {
        let llama = GEMMA_2B.replace("\"gemma\"", "\"llama\"");
        let err = GemmaConfig::from_json(&llama).unwrap_err();
        assert!(err.contains("unsupported model_type \"llama\""), "{err}");
    }

    #[test]
    fn reads_rope_parameters_spelling() {
        let modern = GEMMA_2B.replace(
            "\"rope_theta\":10000.0",
            "\"rope_parameters\":{\"rope_theta\":500.0,\"rope_type\":\"default\"}",
        );
        assert_eq!(GemmaConfig::from_json(&modern).unwrap().rope_theta, 500.0);
    }
}
