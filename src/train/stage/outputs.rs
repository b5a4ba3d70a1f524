//! What a stage writes: its metrics sinks (`metrics.jsonl`, TensorBoard
//! under `runs/`, progress, an in-memory history) and, at the end, the
//! model in Hugging Face format with its tokenizer, chat template and the
//! resolved recipe.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::error::{StageError, io_error};
use crate::log::jsonl::JsonlSink;
use crate::log::progress::Progress;
use crate::log::tensorboard::TensorboardSink;
use crate::log::{Fanout, History, LogEntry, MetricsSink, Shared};
use crate::model::gemma::Gemma;
use crate::model::hf::save_gemma;
use crate::recipe::StageConfig;
use crate::train::trainer::LoopState;

/// The sinks of a stage's loop: the shared history (starting from `past`,
/// a resumed run's log), the files on the primary replica, and a progress
/// display of `(total steps, the state it starts from)` when shown.
pub(super) type Sinks = (Rc<RefCell<History>>, Option<Rc<RefCell<Progress>>>, Fanout);

pub(super) fn open_sinks(
    output_dir: &Path,
    past: Vec<LogEntry>,
    primary: bool,
    progress: Option<(usize, &LoopState)>,
) -> Result<Sinks, StageError> {
    let history = Rc::new(RefCell::new(History(past)));
    let mut sinks: Vec<Box<dyn MetricsSink>> = vec![Box::new(Shared(history.clone()))];
    if primary {
        let metrics_path = output_dir.join("metrics.jsonl");
        write_history(&metrics_path, &history.borrow().0)?;
        let runs = output_dir.join("runs");
        sinks.push(Box::new(
            JsonlSink::append(&metrics_path).map_err(io_error(&metrics_path))?,
        ));
        sinks.push(Box::new(
            TensorboardSink::create(&runs).map_err(io_error(&runs))?,
        ));
    }
    let progress = progress.map(|(total_steps, first)| {
        Rc::new(RefCell::new(Progress::new(
            total_steps,
            first.step,
            first.num_tokens,
        )))
    });
    if let Some(progress) = &progress {
        sinks.push(Box::new(Shared(progress.clone())));
    }
    Ok((history, progress, Fanout(sinks)))
}

/// The trained model, as transformers loads it, with the tokenizer, the
/// recipe's chat template and the resolved recipe beside it.
pub(super) fn save_model<A: AutodiffBackend>(
    stage: &StageConfig,
    model: &Gemma<A>,
    output_dir: &Path,
    tokenizer_dir: &Path,
) -> Result<(), StageError> {
    save_gemma(&model.valid(), output_dir, Some(tokenizer_dir))?;
    if let Some(template) = &stage.data.chat_template {
        record_chat_template(output_dir, template)?;
    }
    let recipe_path = output_dir.join("recipe.yaml");
    std::fs::write(&recipe_path, stage.to_yaml()).map_err(io_error(&recipe_path))
}

/// A recipe's `chat_template` wins over the tokenizer's: write it into the
/// saved `tokenizer_config.json` so the next stage and inference use it.
pub(super) fn record_chat_template(output_dir: &Path, template: &str) -> Result<(), StageError> {
    let path = output_dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| StageError::Io {
            path: path.clone(),
            error: e.into(),
        })?,
        Err(_) => serde_json::json!({}),
    };
    config["chat_template"] = template.into();
    let text = serde_json::to_string_pretty(&config).expect("JSON value serializes");
    std::fs::write(&path, text + "\n").map_err(io_error(&path))
}

/// `metrics.jsonl` as it was at the checkpoint (empty for a fresh run).
fn write_history(path: &Path, entries: &[LogEntry]) -> Result<(), StageError> {
    let mut text = String::new();
    for entry in entries {
        text += &serde_json::Value::Object(entry.clone()).to_string();
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io_error(path))
}
