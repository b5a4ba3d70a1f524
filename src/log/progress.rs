//! Progress on stderr. On a terminal: an indicatif bar (steps, loss,
//! rewards/accuracies, tokens/s, ETA) with eval results printed above it.
//! Elsewhere (CI logs, `nohup`): one plain line per logged step, since a
//! redrawn bar turns a log file into noise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::{LogEntry, MetricsSink};

pub struct Progress {
    bar: Option<ProgressBar>,
    total_steps: usize,
    started: Instant,
    /// Step and token count when this process started (a resumed run
    /// counts its speed from there).
    first_step: usize,
    first_tokens: usize,
}

/// One optimizer step as the bar shows it.
pub struct StepLine {
    pub step: usize,
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub num_tokens: usize,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total_steps: usize, first_step: usize, first_tokens: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_steps as u64);
            let style = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_position(first_step as u64);
            bar.reset_eta();
            bar
        });
        Self {
            bar,
            total_steps,
            started: Instant::now(),
            first_step,
            first_tokens,
        }
    }

    /// After every optimizer step.
    pub fn step(&mut self, line: &StepLine) {
        let Some(bar) = &self.bar else { return };
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_second =
            (line.num_tokens - self.first_tokens.min(line.num_tokens)) as f64 / seconds;
        let mut message = format!("loss {:.4}", line.loss);
        if let Some(accuracy) = line.accuracy {
            message += &format!(" acc {accuracy:.2}");
        }
        message += &format!(" {tokens_per_second:.0} tok/s");
        bar.set_message(message);
        bar.set_position(line.step as u64);
    }

    fn print(&self, line: &str) -> std::io::Result<()> {
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                Ok(())
            }
            None => writeln!(std::io::stderr(), "{line}"),
        }
    }

    /// A line for a logged event; steps only without a bar (the bar shows them).
    fn describe(&self, entry: &LogEntry) -> Option<String> {
        let number = |key: &str| entry.get(key).and_then(|v| v.as_f64());
        let elapsed = self.started.elapsed().as_secs_f64();
        if let (Some(step), Some(loss)) = (number("step"), number("loss")) {
            if self.bar.is_some() {
                return None;
            }
            let mut line = format!("step {step:>5}/{} loss {loss:.4}", self.total_steps);
            if let Some(acc) = number("rewards/accuracies") {
                line += &format!(" rewards/accuracies {acc:.3}");
            }
            if let Some(margin) = number("rewards/margins") {
                line += &format!(" rewards/margins {margin:.4}");
            }
            let done = (step - self.first_step as f64).max(1.0);
            let eta = elapsed / done * (self.total_steps as f64 - step).max(0.0);
            line += &format!(" [{elapsed:.0}s, eta {eta:.0}s]");
            return Some(line);
        }
        if let Some(loss) = number("eval_loss") {
            let mut line = format!("eval loss {loss:.4}");
            if let Some(acc) = number("eval_rewards/accuracies") {
                line += &format!(" rewards/accuracies {acc:.3}");
            }
            if let Some(margin) = number("eval_rewards/margins") {
                line += &format!(" rewards/margins {margin:.4}");
            }
            return Some(line);
        }
        let loss = number("train_loss")?;
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        Some(format!("done: train_loss {loss:.4} in {elapsed:.1}s"))
    }

    /// Removes the bar (an error or an interrupt ends the run).
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

impl MetricsSink for Progress {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        match self.describe(entry) {
            Some(line) => self.print(&line),
            None => Ok(()),
        }
    }
}
