//! TensorBoard scalars under `output_dir/runs/`, written with the
//! `tensorboard-rs` crate (standard `events.out.tfevents.*` files), one
//! scalar per numeric key of each log event, tagged as transformers'
//! TensorBoard callback does (`train/loss`, `eval/loss`, `train/rewards/chosen`).

use std::path::Path;

use tensorboard_rs::summary_writer::SummaryWriter;

use super::{LogEntry, MetricsSink};

pub struct TensorboardSink {
    writer: SummaryWriter,
}

impl TensorboardSink {
    /// Creates `dir` first: the crate panics on a folder it cannot create,
    /// this returns the error instead.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let probe = dir.join(".writable");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        Ok(Self {
            writer: SummaryWriter::new(dir),
        })
    }
}

impl MetricsSink for TensorboardSink {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        let Some(step) = entry.get("step").and_then(|v| v.as_f64()) else {
            return Ok(());
        };
        for (key, value) in entry {
            if key == "step" {
                continue;
            }
            let Some(number) = value.as_f64() else {
                continue;
            };
            let tag = match key.strip_prefix("eval_") {
                Some(rest) => format!("eval/{rest}"),
                None => format!("train/{key}"),
            };
            self.writer.add_scalar(&tag, number as f32, step as usize);
        }
        self.writer.flush();
        Ok(())
    }
}
