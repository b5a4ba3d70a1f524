//! Human-readable progress on stderr: one line per logged step, with the
//! loss and, for DPO, the reward accuracy.

use std::io::Write;

use super::{LogEntry, MetricsSink};

pub struct ProgressLines {
    pub total_steps: usize,
    pub started: std::time::Instant,
}

impl MetricsSink for ProgressLines {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        let number = |key: &str| entry.get(key).and_then(|v| v.as_f64());
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut line = String::new();
        if let (Some(step), Some(loss)) = (number("step"), number("loss")) {
            line = format!("step {step:>5}/{} loss {loss:.4}", self.total_steps);
            if let Some(acc) = number("rewards/accuracies") {
                line += &format!(" rewards/accuracies {acc:.3}");
            }
            if let Some(margin) = number("rewards/margins") {
                line += &format!(" rewards/margins {margin:.4}");
            }
            let done = step.max(1.0);
            let eta = elapsed / done * (self.total_steps as f64 - step).max(0.0);
            line += &format!(" [{elapsed:.0}s, eta {eta:.0}s]");
        } else if let Some(loss) = number("eval_loss") {
            line = format!("eval loss {loss:.4}");
            if let Some(acc) = number("eval_rewards/accuracies") {
                line += &format!(" rewards/accuracies {acc:.3}");
            }
        } else if let Some(loss) = number("train_loss") {
            line = format!("done: train_loss {loss:.4} in {elapsed:.1}s");
        }
        if !line.is_empty() {
            writeln!(std::io::stderr(), "{line}")?;
        }
        Ok(())
    }
}
