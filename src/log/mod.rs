//! Where metrics go: `metrics.jsonl` (transformers' `log_history` format),
//! and the terminal. Imports nothing of ours.

pub mod jsonl;
pub mod progress;
pub mod tensorboard;

use serde_json::{Map, Value};

/// One logged event: a training step, an evaluation or the final summary,
/// with transformers' keys (`loss`, `grad_norm`, `learning_rate`, `epoch`,
/// `step`, TRL's metric names, `eval_*`, `train_loss`, ...).
pub type LogEntry = Map<String, Value>;

/// Receives every log event of a run.
pub trait MetricsSink {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()>;
}

/// Sends each event to several sinks.
pub struct Fanout(pub Vec<Box<dyn MetricsSink>>);

impl MetricsSink for Fanout {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        for sink in &mut self.0 {
            sink.record(entry)?;
        }
        Ok(())
    }
}

/// Keeps every event in memory (tests, the end-of-run report).
#[derive(Default)]
pub struct History(pub Vec<LogEntry>);

impl MetricsSink for History {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        self.0.push(entry.clone());
        Ok(())
    }
}

/// A sink that other parts of a run also hold (the progress bar is fed by
/// the trainer's per-step hook and by the log events).
pub struct Shared<T>(pub std::rc::Rc<std::cell::RefCell<T>>);

impl<T: MetricsSink> MetricsSink for Shared<T> {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        self.0.borrow_mut().record(entry)
    }
}
