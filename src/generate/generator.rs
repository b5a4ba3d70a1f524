//! A model folder ready to answer: weights, tokenizer, chat template and the
//! tokens that end a reply. Each reply runs the prompt once through the
//! model to fill the KV cache, then one token per step.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::sampling::{Sampler, SamplingSettings};
use crate::data::{ChatTemplate, Message, TextTokenizer};
use crate::model::gemma::{Gemma, GemmaBackend, KvCache};
use crate::model::hf::load_gemma;

/// Tokens that end a reply besides the tokenizer's eos: the turn ends of
/// the chat formats the handbook uses (ChatML, Gemma's own).
const TURN_ENDS: [&str; 2] = ["<|im_end|>", "<end_of_turn>"];

pub struct Generator<B: Backend> {
    pub model: Gemma<B>,
    pub tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
    stop_ids: Vec<u32>,
    device: B::Device,
}

/// One reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids, the stop token included when one was produced.
    pub ids: Vec<u32>,
    /// Decoded reply without the stop token.
    pub text: String,
    pub stopped: bool,
    pub seconds: f64,
}

impl Generation {
    pub fn tokens_per_second(&self) -> f64 {
        self.ids.len() as f64 / self.seconds.max(1e-9)
    }
}

impl<B: GemmaBackend> Generator<B> {
    /// Loads a Hugging Face folder (weights, config, tokenizer files).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let model = load_gemma::<B>(dir, DType::F32, device)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let tokenizer = TextTokenizer::load(dir)?;
        let template = match &tokenizer.chat_template {
            Some(source) => Some(ChatTemplate::new(
                source,
                &dir.join("tokenizer_config.json").display().to_string(),
                tokenizer.special.clone(),
            )?),
            None => None,
        };
        let mut stop_ids: Vec<u32> = generation_eos_ids(dir);
        stop_ids.extend(tokenizer.eos_token_id());
        stop_ids.extend(TURN_ENDS.iter().filter_map(|t| tokenizer.token_id(t)));
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            model,
            tokenizer,
            template,
            stop_ids,
            device: device.clone(),
        })
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Prompt ids of a conversation, rendered with the generation prompt;
    /// without a template, the last message's text as is.
    pub fn prompt_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = match &self.template {
            Some(template) => template
                .render(messages, true)
                .map_err(|e| anyhow::anyhow!("chat template: {e}"))?,
            None => match messages.last() {
                Some(message) => message.content.clone(),
                None => bail!("no message to answer"),
            },
        };
        let ids = match &self.template {
            // The template writes <bos> itself.
            Some(_) => self.tokenizer.encode(&text),
            None => self.tokenizer.encode_with_special_tokens(&text),
        };
        ids.map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))
    }

    /// Generates after `prompt_ids`, calling `on_text` with each new piece of
    /// decoded text as soon as it is known (streaming).
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        settings: &SamplingSettings,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        if prompt_ids.is_empty() {
            bail!("the prompt has no tokens");
        }
        let started = Instant::now();
        let mut sampler = Sampler::new(settings.clone());
        let mut cache = KvCache::default();
        let mut ids = Vec::new();
        let mut shown = String::new();
        let mut next_input = prompt_ids.to_vec();
        let mut stopped = false;
        while ids.len() < settings.max_new_tokens {
            let logits = self.step(&next_input, &mut cache);
            let token = sampler.pick(&logits);
            ids.push(token);
            if self.stop_ids.contains(&token) {
                stopped = true;
                break;
            }
            if !self.tokenizer.is_byte_token(token) {
                stream_complete(&self.decode(&ids)?, &mut shown, false, on_text);
            }
            next_input = vec![token];
        }
        let reply: &[u32] = match stopped {
            true => &ids[..ids.len() - 1],
            false => &ids,
        };
        let text = self.decode(reply)?;
        stream_complete(&text, &mut shown, true, on_text);
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            text,
            ids,
            stopped,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Logits (fp32, on the host) of the position after `tokens`.
    pub fn step(&self, tokens: &[u32], cache: &mut KvCache<B>) -> Vec<f32> {
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let input =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &self.device);
        let logits = self.model.forward_cached(input, cache);
        logits
            .cast(DType::F32)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits")
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids)
            .map_err(|e| anyhow::anyhow!("decoding: {e}"))
    }
}

/// Passes on the part of `text` not shown yet. A run of byte-fallback
/// tokens decodes only as a whole (a character, or U+FFFD per byte when
/// invalid), so text is streamed when the latest token is not a byte token,
/// and anything from a U+FFFD on waits for the end (`last`): what was
/// streamed is always a prefix of the reply.
fn stream_complete(text: &str, shown: &mut String, last: bool, on_text: &mut dyn FnMut(&str)) {
    let Some(rest) = text.strip_prefix(shown.as_str()) else {
        return;
    };
    let ready = match last {
        true => rest,
        false => rest.split('\u{fffd}').next().unwrap_or(""),
    };
    if !ready.is_empty() {
        on_text(ready);
        shown.push_str(ready);
    }
}

/// `eos_token_id` of `generation_config.json` (a number or a list).
fn generation_eos_ids(dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
        return Vec::new();
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    match &config["eos_token_id"] {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}
