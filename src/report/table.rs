//! The comparison table: one row per run, its varied keys, then the numbers
//! a reader compares runs by, the best of each column in bold.

use super::labels::Labels;
use super::metrics::RunLog;

/// Which end of a column is best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// One number column.
pub struct Column {
    pub title: &'static str,
    pub better: Better,
    pub value: fn(&RunLog) -> Option<f64>,
}

/// The columns, in order. Losses and time: lower is better; reward
/// accuracy, margin and throughput: higher.
pub const COLUMNS: &[Column] = &[
    Column {
        title: "loss (last step)",
        better: Better::Lower,
        value: |r| r.last_step("loss"),
    },
    Column {
        title: "train_loss (mean)",
        better: Better::Lower,
        value: |r| r.summary("train_loss"),
    },
    Column {
        title: "eval_loss",
        better: Better::Lower,
        value: |r| r.final_eval("loss"),
    },
    Column {
        title: "eval_rewards/accuracies",
        better: Better::Higher,
        value: |r| r.final_eval("rewards/accuracies"),
    },
    Column {
        title: "eval_rewards/margins",
        better: Better::Higher,
        value: |r| r.final_eval("rewards/margins"),
    },
    Column {
        title: "wall time (s)",
        better: Better::Lower,
        value: |r| r.summary("train_runtime"),
    },
    Column {
        title: "tokens/s",
        better: Better::Higher,
        value: |r| r.tokens_per_second(),
    },
];

/// What each column means, printed under the table.
pub const LEGEND: &str = "Bold: the best run of each column (lowest loss and wall time, highest \
reward accuracy, margin and throughput). `loss (last step)`: the last logged training loss; \
`train_loss (mean)`: transformers' summary, the mean over all steps; `eval_*`: the last \
evaluation; `wall time`: `train_runtime`; `tokens/s`: training tokens (TRL's `num_tokens`, \
padding excluded) per second of `train_runtime`.";

/// The markdown table. `names[i]` labels run `i` in the first column.
/// Columns no run has a value for are left out.
pub fn markdown(runs: &[RunLog], labels: &Labels, names: &[String]) -> String {
    let columns: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| runs.iter().any(|r| (c.value)(r).is_some()))
        .collect();
    let mut header = vec!["run".to_string()];
    header.extend(labels.keys.iter().map(|k| format!("`{k}`")));
    header.extend(columns.iter().map(|c| c.title.to_string()));
    let mut align = vec!["---"; 1 + labels.keys.len()];
    align.extend(columns.iter().map(|_| "---:"));
    let mut lines = vec![row(&header), row(&align)];
    for (index, run) in runs.iter().enumerate() {
        let mut cells = vec![names[index].clone()];
        cells.extend(labels.values[index].iter().cloned());
        cells.extend(columns.iter().map(|c| cell(c, run, runs)));
        lines.push(row(&cells));
    }
    lines.join("\n") + "\n"
}

fn row<S: AsRef<str>>(cells: &[S]) -> String {
    let cells: Vec<&str> = cells.iter().map(|c| c.as_ref()).collect();
    format!("| {} |", cells.join(" | "))
}

/// The value, bold if no other run's is better (and not all are equal);
/// `-` if the run has none.
fn cell(column: &Column, run: &RunLog, runs: &[RunLog]) -> String {
    let Some(value) = (column.value)(run) else {
        return "-".into();
    };
    let values: Vec<f64> = runs.iter().filter_map(|r| (column.value)(r)).collect();
    let best = match column.better {
        Better::Lower => values.iter().copied().fold(f64::INFINITY, f64::min),
        Better::Higher => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    let text = number(value);
    let all_equal = values.iter().all(|v| *v == best);
    match value == best && !all_equal {
        true => format!("**{text}**"),
        false => text,
    }
}

/// Four significant digits, no exponent: `0.5243`, `0.0003588`, `5235`.
pub fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 10) as usize;
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(0.524298), "0.5243");
        assert_eq!(number(0.000358772), "0.0003588");
        assert_eq!(number(5234.7), "5235");
        assert_eq!(number(-1.5), "-1.500");
        assert_eq!(number(0.0), "0");
    }
}
