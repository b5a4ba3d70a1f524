//! A stage's datasets in a plan: where each split's parquet files are, how
//! many rows they hold (from the parquet footers, without reading the
//! rows), how many the mixer keeps, and, when the tokenizer is present, how
//! many examples TRL's preparation leaves (what the step count is made of).

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Serialize;

use crate::data::source::split_files;
use crate::data::{DataError, Preprocessor, RepoKind, prepare_dpo, prepare_sft, resolve};
use crate::recipe::{DataPlan, SplitRole, SplitSource, StageConfig, StageKind};

/// One split of one dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetPlan {
    pub id: String,
    pub split: String,
    /// `train`, `test`, or `mixture` (split into both by `test_split_size`).
    pub role: &'static str,
    pub fraction: f64,
    pub files: Vec<PathBuf>,
    /// Rows in the files.
    pub rows: Option<u64>,
    /// Rows the mixer keeps (`int(fraction × rows)` of train splits).
    pub kept_rows: Option<u64>,
    /// Where the dataset was sought, when it was not found.
    pub looked_in: Vec<PathBuf>,
    pub problem: Option<String>,
}

impl DatasetPlan {
    /// "dataset `ID` split `S`: PROBLEM" for the list of what is missing.
    pub fn missing_text(&self) -> Option<String> {
        self.problem
            .as_ref()
            .map(|p| format!("dataset `{}` split `{}`: {p}", self.id, self.split))
    }
}

/// All splits of a stage and the rows of its train and test sets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataSummary {
    pub datasets: Vec<DatasetPlan>,
    /// `None` when a train split is missing.
    pub train_rows: Option<u64>,
    pub test_rows: Option<u64>,
    /// Why there is no data plan at all.
    pub problem: Option<String>,
}

/// Locate and count every split of `stage`.
pub fn plan_datasets(stage: &StageConfig) -> DataSummary {
    let plan = match stage.data.plan() {
        Ok(plan) => plan,
        Err((key, message)) => {
            return DataSummary {
                datasets: Vec::new(),
                train_rows: None,
                test_rows: None,
                problem: Some(format!("key `{key}`: {message}")),
            };
        }
    };
    match plan {
        DataPlan::Mixer { train, test } => {
            let train: Vec<DatasetPlan> = train.iter().map(|s| locate(s, "train")).collect();
            let test: Vec<DatasetPlan> = test.iter().map(|s| locate(s, "test")).collect();
            DataSummary {
                train_rows: sum_kept(&train),
                test_rows: sum_kept(&test),
                datasets: train.into_iter().chain(test).collect(),
                problem: None,
            }
        }
        DataPlan::Mixture {
            sources,
            test_split_size,
            ..
        } => {
            let datasets: Vec<DatasetPlan> = sources.iter().map(|s| locate(s, "mixture")).collect();
            let total = sum_kept(&datasets);
            let test = match (total, test_split_size) {
                (Some(total), Some(size)) if size < 1.0 => {
                    Some(((size * total as f64).ceil() as u64).min(total))
                }
                (Some(total), Some(size)) => Some((size as u64).min(total)),
                (Some(_), None) => Some(0),
                (None, _) => None,
            };
            DataSummary {
                train_rows: total.zip(test).map(|(t, n)| t - n),
                test_rows: test,
                datasets,
                problem: None,
            }
        }
    }
}

fn sum_kept(plans: &[DatasetPlan]) -> Option<u64> {
    plans.iter().map(|p| p.kept_rows).sum()
}

fn locate(source: &SplitSource, role: &'static str) -> DatasetPlan {
    let mut plan = DatasetPlan {
        id: source.id.clone(),
        split: source.split.clone(),
        role,
        fraction: source.fraction,
        files: Vec::new(),
        rows: None,
        kept_rows: None,
        looked_in: Vec::new(),
        problem: None,
    };
    let dir = match resolve(&source.id, RepoKind::Dataset) {
        Ok(dir) => dir,
        Err(DataError::NotFound { tried, .. }) => {
            plan.problem = Some(format!("not found (looked in {})", paths_text(&tried)));
            plan.looked_in = tried;
            return plan;
        }
        Err(e) => {
            plan.problem = Some(e.to_string());
            return plan;
        }
    };
    let files = match split_files(&dir, &source.id, &source.split, source.config.as_deref()) {
        Ok(files) => files,
        Err(e) => {
            plan.problem = Some(e.to_string());
            plan.looked_in = vec![dir];
            return plan;
        }
    };
    match files
        .iter()
        .map(|f| parquet_rows(f))
        .sum::<Result<u64, String>>()
    {
        Ok(rows) => {
            plan.rows = Some(rows);
            // The handbook's `int(fraction * len)`.
            plan.kept_rows = Some(((source.fraction * rows as f64) as u64).min(rows));
        }
        Err(message) => plan.problem = Some(message),
    }
    plan.files = files;
    plan
}

/// Row count from a parquet file's footer.
fn parquet_rows(path: &Path) -> Result<u64, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| format!("{}: cannot read parquet: {e}", path.display()))?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

fn paths_text(paths: &[PathBuf]) -> String {
    let texts: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    texts.join(", ")
}

/// Train examples after TRL's preparation (rows dropped, or packed
/// sequences for `compat: trl-0.7` SFT), as the trainer will see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExampleCount {
    pub examples: u64,
    pub dropped: u64,
}

/// Tokenize the train split as the trainer would, to count its examples.
pub fn count_examples(stage: &StageConfig) -> Result<ExampleCount, DataError> {
    let pre = Preprocessor::from_stage(stage)?;
    let (kept, dropped) = match stage.kind {
        StageKind::Dpo => {
            let split = prepare_dpo(stage, &pre, SplitRole::Train)?;
            (split.kept().count(), split.dropped_count())
        }
        StageKind::Sft => {
            let split = prepare_sft(stage, &pre, SplitRole::Train)?;
            (split.kept().count(), split.dropped_count())
        }
    };
    Ok(ExampleCount {
        examples: kept as u64,
        dropped: dropped as u64,
    })
}
