//! Where `align generate`'s prompts come from and where replies go: one
//! `--prompt` streamed to stdout, a `--prompts` JSONL file answered line by
//! line into JSONL (for side-by-side comparisons of checkpoints), or an
//! interactive chat that keeps the conversation.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::generator::{Generation, Generator};
use super::sampling::SamplingSettings;
use crate::data::Message;
use crate::model::gemma::GemmaBackend;

fn user(content: &str) -> Message {
    Message {
        role: "user".into(),
        content: content.into(),
    }
}

/// Streams the reply to one prompt on `out`; speed on stderr.
pub fn answer_one<B: GemmaBackend>(
    generator: &Generator<B>,
    prompt: &str,
    settings: &SamplingSettings,
    out: &mut dyn Write,
) -> Result<Generation> {
    let ids = generator.prompt_ids(&[user(prompt)])?;
    let generation = stream(generator, &ids, settings, out)?;
    eprintln!(
        "[{} tokens, {:.1} tokens/s]",
        generation.ids.len(),
        generation.tokens_per_second()
    );
    Ok(generation)
}

fn stream<B: GemmaBackend>(
    generator: &Generator<B>,
    ids: &[u32],
    settings: &SamplingSettings,
    out: &mut dyn Write,
) -> Result<Generation> {
    let mut write_error = None;
    let generation = generator.generate(ids, settings, &mut |piece| {
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            write_error.get_or_insert(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("writing the reply");
    }
    writeln!(out)?;
    Ok(generation)
}

/// Answers every line of a JSONL file: `{"prompt": TEXT}` or
/// `{"messages": [{"role", "content"}, ...]}`; writes one JSON object per
/// line to `out` with the prompt, the completion and its speed.
pub fn answer_file<B: GemmaBackend>(
    generator: &Generator<B>,
    path: &Path,
    settings: &SamplingSettings,
    out: &mut dyn Write,
) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut answered = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), index + 1);
        let row: Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let messages = messages_of(&row).with_context(at)?;
        let ids = generator.prompt_ids(&messages).with_context(at)?;
        let generation = generator.generate(&ids, settings, &mut |_| {})?;
        let record = json!({
            "prompt": row.get("prompt").cloned().unwrap_or(json!(messages.last().map(|m| &m.content))),
            "completion": generation.text,
            "completion_ids": generation.ids,
            "stopped": generation.stopped,
            "tokens_per_second": generation.tokens_per_second(),
        });
        writeln!(out, "{record}")?;
        answered += 1;
    }
    Ok(answered)
}

fn messages_of(row: &Value) -> Result<Vec<Message>> {
    if let Some(prompt) = row.get("prompt").and_then(Value::as_str) {
        return Ok(vec![user(prompt)]);
    }
    let Some(list) = row.get("messages").and_then(Value::as_array) else {
        bail!("expected a `prompt` string or a `messages` list");
    };
    list.iter()
        .map(|m| {
            let field = |key: &str| {
                m.get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("a message without `{key}`"))
            };
            Ok(Message {
                role: field("role")?,
                content: field("content")?,
            })
        })
        .collect()
}

/// A chat on the terminal: each line is a user turn; the conversation is
/// kept and re-rendered with the template. An empty line or `/exit` ends it.
pub fn chat<B: GemmaBackend>(generator: &Generator<B>, settings: &SamplingSettings) -> Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut messages: Vec<Message> = Vec::new();
    eprintln!("chat: an empty line or /exit ends it");
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() || line == "/exit" {
            return Ok(());
        }
        messages.push(user(line));
        let ids = generator.prompt_ids(&messages)?;
        let generation = stream(generator, &ids, settings, &mut stdout)?;
        messages.push(Message {
            role: "assistant".into(),
            content: generation.text,
        });
    }
}
