//! Why a stage could not run: its data, model, loss settings, loop,
//! checkpoint or replicas, each error naming the file or key at fault.

use std::path::{Path, PathBuf};

use crate::data::DataError;
use crate::model::hf::HfError;
use crate::train::checkpoint::CheckpointError;
use crate::train::dpo::DpoConfigError;
use crate::train::error::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] HfError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{path}: key `{key}`: {error}")]
    Loss {
        path: PathBuf,
        key: &'static str,
        error: DpoConfigError,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Starting, coordinating or stopping the replicas of a data-parallel run.
    #[error("{0}")]
    Parallel(String),
    /// A replica of a data-parallel run failed with this error.
    #[error("device {device}: {error}")]
    Device {
        device: String,
        error: Box<StageError>,
    },
    #[error(
        "{checkpoint}: the recipe changed since this checkpoint, so resuming would not continue the same run: {}. Restore those values, or start afresh without --resume",
        keys.join("; ")
    )]
    RecipeChanged {
        checkpoint: PathBuf,
        keys: Vec<String>,
    },
}

impl StageError {
    /// An error that only follows another replica's failure.
    pub fn is_secondary(&self) -> bool {
        matches!(self, StageError::Train(error) if error.is_secondary())
    }
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |error| StageError::Io {
        path: path.to_path_buf(),
        error,
    }
}
