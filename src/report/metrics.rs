//! One run's `metrics.jsonl`, split the way transformers writes its
//! `log_history`: training steps (`loss`, `rewards/margins`, ...), evaluations
//! (`eval_*`) and the summary line (`train_loss`, `train_runtime`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ReportError;

/// One logged event.
pub type Entry = Map<String, Value>;

/// A run folder's log.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub dir: PathBuf,
    /// Training log lines, in order.
    pub steps: Vec<Entry>,
    /// Evaluation lines (keys with the `eval_` prefix), in order.
    pub evals: Vec<Entry>,
    /// The end-of-training line, when training finished.
    pub summary: Option<Entry>,
}

impl RunLog {
    /// Reads `dir/metrics.jsonl`; a line that is not a JSON object is an
    /// error naming its line number.
    pub fn read(dir: &Path) -> Result<RunLog, ReportError> {
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|error| ReportError::Io {
            path: path.clone(),
            error,
        })?;
        let mut log = RunLog {
            dir: dir.to_path_buf(),
            steps: Vec::new(),
            evals: Vec::new(),
            summary: None,
        };
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(line).map_err(|e| ReportError::Line {
                path: path.clone(),
                line: index + 1,
                message: e.to_string(),
            })?;
            log.push(entry);
        }
        Ok(log)
    }

    fn push(&mut self, entry: Entry) {
        if entry.contains_key("train_loss") || entry.contains_key("train_runtime") {
            self.summary = Some(entry);
        } else if entry.keys().any(|k| k.starts_with("eval_")) {
            self.evals.push(entry);
        } else {
            self.steps.push(entry);
        }
    }

    /// `(step, key)` over the training lines that have `key`.
    pub fn step_series(&self, key: &str) -> Vec<(f64, f64)> {
        series(&self.steps, key)
    }

    /// `(step, eval_key)` over the evaluation lines.
    pub fn eval_series(&self, key: &str) -> Vec<(f64, f64)> {
        series(&self.evals, &format!("eval_{key}"))
    }

    /// The last logged training value of `key` (`loss`: the final train loss).
    pub fn last_step(&self, key: &str) -> Option<f64> {
        self.steps.iter().rev().find_map(|e| number(e, key))
    }

    /// `eval_key` of the last evaluation.
    pub fn final_eval(&self, key: &str) -> Option<f64> {
        let key = format!("eval_{key}");
        self.evals.iter().rev().find_map(|e| number(e, &key))
    }

    /// A value of the summary line (`train_loss`, `train_runtime`).
    pub fn summary(&self, key: &str) -> Option<f64> {
        self.summary.as_ref().and_then(|e| number(e, key))
    }

    /// Training tokens (TRL's cumulative `num_tokens`: non-padding tokens,
    /// prompts included) per second of `train_runtime`.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let tokens = self.last_step("num_tokens")?;
        let seconds = self.summary("train_runtime")?;
        (seconds > 0.0).then(|| tokens / seconds)
    }

    /// Whether any training or evaluation line has `key` (or `eval_key`).
    pub fn has(&self, key: &str) -> bool {
        !self.step_series(key).is_empty() || !self.eval_series(key).is_empty()
    }
}

fn number(entry: &Entry, key: &str) -> Option<f64> {
    entry.get(key).and_then(Value::as_f64)
}

fn series(entries: &[Entry], key: &str) -> Vec<(f64, f64)> {
    entries
        .iter()
        .filter_map(|e| Some((number(e, "step")?, number(e, key)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_into_steps_evals_and_summary() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            concat!(
                "{\"loss\": 0.7, \"num_tokens\": 100.0, \"step\": 1}\n",
                "{\"loss\": 0.6, \"num_tokens\": 200.0, \"step\": 2}\n",
                "{\"train_runtime\": 4.0, \"train_loss\": 0.65, \"step\": 2}\n",
                "{\"eval_loss\": 0.5, \"eval_rewards/margins\": 0.25, \"step\": 2}\n",
            ),
        )
        .expect("write");
        let log = RunLog::read(dir.path()).expect("reads");
        assert_eq!(log.step_series("loss"), vec![(1.0, 0.7), (2.0, 0.6)]);
        assert_eq!(log.last_step("loss"), Some(0.6));
        assert_eq!(log.summary("train_loss"), Some(0.65));
        assert_eq!(log.final_eval("rewards/margins"), Some(0.25));
        assert_eq!(log.tokens_per_second(), Some(50.0));
        assert!(log.has("rewards/margins") && !log.has("rewards/accuracies"));
    }

    #[test]
    fn a_broken_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"loss\": 1}\nnot json\n",
        )
        .expect("write");
        let err = RunLog::read(dir.path()).expect_err("broken").to_string();
        assert!(err.contains("metrics.jsonl:2"), "{err}");
    }
}
