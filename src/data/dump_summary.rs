//! What `align data` reports besides the rows: the summary line and its
//! length statistics, and how each row is written. Shared by both stacks'
//! dumps (`dump`, `dump_trl07`).

use std::io::Write;

use serde::Serialize;

use crate::recipe::{StageKind, Warning};

use super::error::DataError;

/// Token counts per sequence, before truncation (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LengthStats {
    pub min: usize,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
}

impl LengthStats {
    /// `None` for no lengths.
    pub fn of(mut lengths: Vec<usize>) -> Option<LengthStats> {
        lengths.sort_unstable();
        let rank = |p: f64| {
            lengths[((p * lengths.len() as f64).ceil() as usize).clamp(1, lengths.len()) - 1]
        };
        Some(LengthStats {
            min: *lengths.first()?,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: *lengths.last()?,
        })
    }
}

/// What `dump_rows` saw, for the summary line on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    pub stage: StageKind,
    pub split: &'static str,
    /// Rows in the split (dropped ones included).
    pub rows: usize,
    pub dropped: usize,
    /// Kept rows that `max_length` cuts.
    pub truncated: usize,
    /// Rows written (after `limit`).
    pub written: usize,
    pub max_length: Option<usize>,
    /// Kept rows; DPO: the longer of prompt+chosen and prompt+rejected.
    pub lengths: Option<LengthStats>,
    /// The recipe's ignored keys.
    pub warnings: Vec<Warning>,
}

impl std::fmt::Display for DataSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} rows, {} dropped, {} truncated",
            self.stage, self.split, self.rows, self.dropped, self.truncated
        )?;
        match self.max_length {
            Some(max) => write!(f, " (max_length {max})")?,
            None => write!(f, " (no max_length)")?,
        }
        if let Some(l) = &self.lengths {
            write!(
                f,
                "; tokens per sequence: min {} p50 {} p90 {} p99 {} max {}",
                l.min, l.p50, l.p90, l.p99, l.max
            )?;
        }
        write!(f, "; {} written", self.written)
    }
}

/// One row as one line of JSON.
pub(super) fn write_line<T: Serialize>(out: &mut dyn Write, row: &T) -> Result<(), DataError> {
    let line = serde_json::to_string(row).expect("rows serialize to JSON");
    writeln!(out, "{line}").map_err(DataError::Output)
}
