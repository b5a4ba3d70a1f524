//! The data layer's one error type. Every variant names what is wrong and
//! where: the file, the column, the dataset row, so a user can fix the data
//! without reading our code.

use std::path::PathBuf;

use thiserror::Error;

use crate::recipe::RecipeError;

/// Where a row came from: dataset id, split name and its index in the
/// split's files (in file order, before mixing and shuffling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLocation {
    pub dataset: String,
    pub split: String,
    pub row: usize,
}

impl std::fmt::Display for RowLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dataset `{}` split `{}` row {}",
            self.dataset, self.split, self.row
        )
    }
}

/// Everything that can go wrong between a recipe and a batch.
#[derive(Debug, Error)]
pub enum DataError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{what} `{id}` not found: no such folder, and not in {}; `align download RECIPE` fetches a hub id into the cache",
        tried_text(tried)
    )]
    NotFound {
        what: &'static str,
        id: String,
        tried: Vec<PathBuf>,
    },

    #[error("dataset `{id}` ({}): no split `{split}` (looked for {split}.parquet, data/{split}-*.parquet, {split}-*.parquet, {split}/*.parquet); splits found: {}", dir.display(), list_text(available))]
    SplitNotFound {
        id: String,
        dir: PathBuf,
        split: String,
        available: Vec<String>,
    },

    #[error("{}: cannot read parquet: {message}", path.display())]
    Parquet { path: PathBuf, message: String },

    #[error("{}: no usable columns for {expected}; columns found: {}", path.display(), list_text(found))]
    MissingColumns {
        path: PathBuf,
        expected: String,
        found: Vec<String>,
    },

    #[error("{}: column `{column}` has type {found}, expected {expected}", path.display())]
    ColumnType {
        path: PathBuf,
        column: String,
        expected: &'static str,
        found: String,
    },

    #[error("{location}: {message}")]
    Row {
        location: RowLocation,
        message: String,
    },

    #[error("{location}: chat template {message}")]
    Template {
        location: RowLocation,
        message: String,
    },

    #[error("{origin}: chat template does not parse: {message}")]
    TemplateSyntax { origin: String, message: String },

    #[error("{}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error(
        "{} split is empty after filtering ({dropped} of {total} rows dropped: {reason})",
        role
    )]
    EmptySplit {
        role: &'static str,
        dropped: usize,
        total: usize,
        reason: String,
    },

    #[error("{0}")]
    Unsupported(String),

    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

fn tried_text(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        return "any known location".into();
    }
    tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_text(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
