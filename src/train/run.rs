//! Running a whole recipe: every stage in order (SFT, then DPO from the SFT
//! output, as the handbook chains them). A stage whose `output_dir` already
//! holds a finished model is skipped unless forced.

use std::path::Path;

use super::TrainBackend;
use super::parallel::{Cluster, run_stage_parallel};
use super::stage::{RunOptions, StageError, StageOutcome, run_stage};
use crate::data::hub::progress::Display;
use crate::data::hub::{HubError, HubSettings, download_recipe};
use crate::recipe::{Recipe, RecipeError, StageConfig, StageKind};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Download(#[from] HubError),
    #[error("stage {index} ({kind}): {error}")]
    Stage {
        index: usize,
        kind: &'static str,
        error: Box<StageError>,
    },
}

/// What happened to each stage.
#[derive(Debug)]
pub enum StageResult {
    Ran(Box<StageOutcome>),
    Skipped { output_dir: String },
}

/// Loads `path` (a chained recipe or one handbook config, read as `kind`
/// when given) with `overrides`, and runs its stages.
pub fn run_recipe<A: TrainBackend>(
    path: &Path,
    overrides: &[String],
    kind: Option<StageKind>,
    options: &RunOptions,
    force: bool,
    device: &A::Device,
) -> Result<Vec<StageResult>, RunError> {
    let cluster = Cluster::single(device.clone());
    run_recipe_on::<A>(path, overrides, kind, options, force, &cluster)
}

/// [`run_recipe`] with one replica per device of `cluster` (data parallel
/// when there are several, here or on other nodes).
pub fn run_recipe_on<A: TrainBackend>(
    path: &Path,
    overrides: &[String],
    kind: Option<StageKind>,
    options: &RunOptions,
    force: bool,
    cluster: &Cluster<A::Device>,
) -> Result<Vec<StageResult>, RunError> {
    let recipe = Recipe::load_as(path, overrides, kind)?;
    for warning in &recipe.warnings {
        eprintln!("warning: {warning}");
    }
    // Models and datasets named by hub id and not found locally are
    // fetched now, so that no stage starts and then waits on the network.
    let display = Display::for_stderr(options.quiet);
    let fetched = download_recipe(&recipe.stages, &HubSettings::from_env(), display, false)?;
    if !options.quiet && fetched.bytes() > 0 {
        eprint!("{fetched}");
    }
    let mut results = Vec::new();
    for (index, stage) in recipe.stages.iter().enumerate() {
        if !force && is_finished(stage) {
            eprintln!(
                "stage {} ({}): {} already holds a finished model; skipped (--force reruns it)",
                index + 1,
                stage.kind.name(),
                stage.training.output_dir
            );
            results.push(StageResult::Skipped {
                output_dir: stage.training.output_dir.clone(),
            });
            continue;
        }
        if !options.quiet {
            eprintln!(
                "stage {} ({}) -> {}",
                index + 1,
                stage.kind.name(),
                stage.training.output_dir
            );
        }
        // `gradient_checkpointing` is per-layer recomputation in the loop
        // (`train::recompute`), on the same backend.
        let outcome = match cluster.world() {
            1 => run_stage::<A>(stage, options, &cluster.devices[0]),
            _ => run_stage_parallel::<A>(stage, options, cluster),
        };
        let outcome = outcome.map_err(|error| RunError::Stage {
            index: index + 1,
            kind: stage.kind.name(),
            error: Box::new(error),
        })?;
        results.push(StageResult::Ran(Box::new(outcome)));
    }
    Ok(results)
}

/// A stage is finished when its output folder has the final weights and a
/// `metrics.jsonl` whose summary line (`train_loss`) was written.
pub fn is_finished(stage: &StageConfig) -> bool {
    let dir = Path::new(&stage.training.output_dir);
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    dir.join("model.safetensors").is_file() && metrics.contains("\"train_loss\"")
}
