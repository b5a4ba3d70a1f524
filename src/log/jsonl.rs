//! `metrics.jsonl`: one JSON object per line, flushed after every event so a
//! killed run keeps everything it logged.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{LogEntry, MetricsSink};

pub struct JsonlSink {
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Appends to `path` (a resumed run continues the same file).
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }
}

impl MetricsSink for JsonlSink {
    fn record(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
