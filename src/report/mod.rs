//! `align report`: compares finished runs from their `metrics.jsonl`.
//! Writes `report.md` (one row per run: the varied keys, final losses,
//! final eval reward accuracy and margin, wall time, tokens/s; the best run
//! of each column in bold) and PNG plots: loss, rewards/margins and
//! rewards/accuracies against step (one line per run), and the final eval
//! metrics against each swept numeric value.
//!
//! Reads files only: imports nothing else of ours, so it works on any
//! output folders, including runs made by other versions.
//!
//! - [`metrics`]: one run's log, split into steps, evaluations and summary.
//! - [`labels`]: the keys that tell the runs apart.
//! - [`table`]: the markdown table.
//! - [`plot`]: PNG line charts.

pub mod labels;
pub mod metrics;
pub mod plot;
pub mod table;

use std::path::{Path, PathBuf};

pub use labels::Labels;
pub use metrics::RunLog;
use plot::{Panel, Series, draw_png};

/// Everything that stops a report, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: not a JSON object: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no metrics.jsonl in it or in its subfolders", dir.display())]
    NoMetrics { dir: PathBuf },
    #[error("no run folders given")]
    NoRuns,
    #[error("{}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run folders compared, in table order.
    pub runs: Vec<PathBuf>,
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Training metrics plotted against step, with their file names.
const STEP_PLOTS: &[(&str, &str)] = &[
    ("loss", "loss.png"),
    ("rewards/margins", "rewards_margins.png"),
    ("rewards/accuracies", "rewards_accuracies.png"),
];

/// Final eval metrics plotted against a swept value.
const EVAL_METRICS: &[&str] = &["loss", "rewards/accuracies", "rewards/margins"];

const STEP_PLOT_SIZE: (u32, u32) = (900, 520);
const EVAL_PANEL_SIZE: (u32, u32) = (440, 400);

/// Compares the runs in `dirs` (a folder without `metrics.jsonl` stands for
/// its subfolders that have one, e.g. a sweep's `output_dir/sweep`) and
/// writes `report.md` and the plots into `out`.
pub fn write_report(dirs: &[PathBuf], out: &Path) -> Result<Report, ReportError> {
    let run_dirs = run_folders(dirs)?;
    let runs = run_dirs
        .iter()
        .map(|dir| RunLog::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let labels = Labels::of(&runs);
    std::fs::create_dir_all(out).map_err(|error| ReportError::Io {
        path: out.to_path_buf(),
        error,
    })?;
    let mut plots = step_plots(&runs, &labels, out)?;
    plots.extend(eval_plots(&runs, &labels, out)?);
    let names: Vec<String> = run_dirs.iter().map(|d| display_name(d, out)).collect();
    let markdown = out.join("report.md");
    let text = render(&runs, &labels, &names, &plots);
    std::fs::write(&markdown, text).map_err(|error| ReportError::Io {
        path: markdown.clone(),
        error,
    })?;
    Ok(Report {
        runs: run_dirs,
        markdown,
        plots,
    })
}

/// Each given folder that has a `metrics.jsonl`, or else its subfolders
/// that do (sorted by name).
pub fn run_folders(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    if dirs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    let mut found = Vec::new();
    for dir in dirs {
        if dir.join("metrics.jsonl").is_file() {
            found.push(dir.clone());
            continue;
        }
        let entries = std::fs::read_dir(dir).map_err(|error| ReportError::Io {
            path: dir.clone(),
            error,
        })?;
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("metrics.jsonl").is_file())
            .collect();
        if children.is_empty() {
            return Err(ReportError::NoMetrics { dir: dir.clone() });
        }
        children.sort();
        found.extend(children);
    }
    Ok(found)
}

/// `dir` relative to the report's folder when inside it, else as given.
fn display_name(dir: &Path, out: &Path) -> String {
    let relative = match (dir.canonicalize(), out.canonicalize()) {
        (Ok(dir), Ok(out)) => dir.strip_prefix(&out).ok().map(|p| p.display().to_string()),
        _ => None,
    };
    relative
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| dir.display().to_string())
        .replace('|', "\\|")
}

fn step_plots(runs: &[RunLog], labels: &Labels, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for (metric, file) in STEP_PLOTS {
        if !runs.iter().any(|r| r.has(metric)) {
            continue;
        }
        let series: Vec<Series> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| Series {
                label: labels.legend(i, runs),
                line: run.step_series(metric),
                dots: run.eval_series(metric),
            })
            .collect();
        let with_evals = series.iter().any(|s| !s.dots.is_empty());
        let panel = Panel {
            title: match with_evals {
                true => format!("{metric} (lines: training, dots: evaluation)"),
                false => metric.to_string(),
            },
            x_desc: "step".into(),
            y_desc: metric.to_string(),
            series,
            log_x: false,
        };
        let path = out.join(file);
        draw_png(&path, &[panel], STEP_PLOT_SIZE)?;
        written.push(path);
    }
    Ok(written)
}

/// For each varied key with numeric values: the final eval metrics against
/// it, one line per setting of the other varied keys.
fn eval_plots(runs: &[RunLog], labels: &Labels, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let metrics: Vec<&str> = EVAL_METRICS
        .iter()
        .copied()
        .filter(|m| runs.iter().any(|r| r.final_eval(m).is_some()))
        .collect();
    let mut written = Vec::new();
    for (key_index, key) in labels.keys.iter().enumerate() {
        let Some(xs) = labels.numeric(key_index) else {
            continue;
        };
        if metrics.is_empty() || xs.iter().all(|x| *x == xs[0]) {
            continue;
        }
        let log_x = spans_decades(&xs);
        let panels: Vec<Panel> = metrics
            .iter()
            .map(|metric| Panel {
                title: format!("eval_{metric}"),
                x_desc: key.clone(),
                y_desc: format!("eval_{metric}"),
                series: groups(runs, labels, key_index, &xs, metric),
                log_x,
            })
            .collect();
        let path = out.join(format!("eval_vs_{}.png", file_safe(key)));
        let size = (EVAL_PANEL_SIZE.0 * panels.len() as u32, EVAL_PANEL_SIZE.1);
        draw_png(&path, &panels, size)?;
        written.push(path);
    }
    Ok(written)
}

/// One series per setting of the keys other than `key_index`, its points
/// sorted by the swept value.
fn groups(
    runs: &[RunLog],
    labels: &Labels,
    key_index: usize,
    xs: &[f64],
    metric: &str,
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let Some(y) = run.final_eval(metric) else {
            continue;
        };
        let label = labels.legend_without(i, key_index);
        let index = match series.iter().position(|s| s.label == label) {
            Some(index) => index,
            None => {
                series.push(Series {
                    label,
                    ..Series::default()
                });
                series.len() - 1
            }
        };
        series[index].line.push((xs[i], y));
    }
    for s in &mut series {
        s.line.sort_by(|a, b| a.0.total_cmp(&b.0));
        s.dots = s.line.clone();
    }
    series
}

/// Positive values whose largest is at least ten times the smallest read
/// better on a log axis (beta in {0.01, 0.1, 0.5}).
fn spans_decades(xs: &[f64]) -> bool {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    min > 0.0 && max / min >= 10.0
}

fn file_safe(key: &str) -> String {
    key.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect()
}

fn render(runs: &[RunLog], labels: &Labels, names: &[String], plots: &[PathBuf]) -> String {
    let mut text = format!("# Comparison of {} runs\n\n", runs.len());
    text += &table::markdown(runs, labels, names);
    text += &format!("\n{}\n", table::LEGEND);
    if !plots.is_empty() {
        text += "\n## Plots\n\n";
        for plot in plots {
            let file = plot
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let title = file.trim_end_matches(".png");
            text += &format!("![{title}]({file})\n\n");
        }
    }
    text
}
