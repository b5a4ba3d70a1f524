//! The recipe layer's one error type: every variant names the file and, where
//! there is one, the key (and its line) so a user can fix the config without
//! reading our code.

use std::path::PathBuf;

use thiserror::Error;

/// Where a value came from: a line of a config file, or a `--set` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Line (1-based) of the key in the config file, when it could be found.
    Line(usize),
    /// A `--set KEY=VALUE` or a chained recipe's `overrides:` entry.
    Override,
    /// Not known (for example a key inside a nested mapping).
    Unknown,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(line) => write!(f, ":{line}"),
            Origin::Override => write!(f, " (override)"),
            Origin::Unknown => Ok(()),
        }
    }
}

/// Everything that can be wrong with a recipe or a handbook config file.
#[derive(Debug, Error)]
pub enum RecipeError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}:{column}: malformed YAML: {message}", path.display())]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}: expected a mapping of keys to values at the top level, found {found}", path.display())]
    NotAMapping { path: PathBuf, found: String },

    #[error("{}{origin}: unknown key `{key}`{}", path.display(), suggestion_text(suggestion))]
    UnknownKey {
        path: PathBuf,
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },

    #[error("{}{origin}: key `{key}`: {message}", path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        origin: Origin,
        message: String,
    },

    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },

    #[error("--set `{text}`: {message}")]
    BadOverride { text: String, message: String },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(key) => format!(" (did you mean `{key}`?)"),
        None => String::new(),
    }
}

/// A key accepted but not acted on; the CLI prints each one once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: `{}` ignored: {}",
            self.path.display(),
            self.key,
            self.message
        )
    }
}
