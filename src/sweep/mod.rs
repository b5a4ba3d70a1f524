//! `align sweep`: hyperparameter ablations. The cartesian product of a grid
//! of recipe keys runs one point after the other, each in
//! `output_dir/sweep/<key>=<value>,.../` with its own resolved recipe, and
//! ends with `align report` over the runs.
//!
//! Everything that can be wrong with the grid is found before the first run
//! ([`plan`]). A run whose folders already hold finished models is skipped,
//! so a sweep that was stopped resumes where it stopped.
//!
//! Imports `recipe`, `train` (to run a point, as `align train` does) and
//! `report`.
//!
//! - [`grid`]: `--grid KEY=V1,V2` and the recipe's `sweep:` section.
//! - [`plan`]: values checked, folders decided, stages shared.

pub mod grid;
pub mod plan;

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde_yaml_ng::Value;

pub use grid::{Axis, Grid, GridError};
pub use plan::{PlannedRun, PlannedStage, SweepPlan, plan};

use crate::recipe::RecipeError;
use crate::report::{Report, ReportError, write_report};
use crate::train::run::{RunError, run_recipe};
use crate::train::stage::RunOptions;

/// Everything that stops a sweep, each naming the grid value, run or folder.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("nothing to sweep: give --grid KEY=V1,V2,... or a `sweep:` section in the recipe")]
    NothingToSweep,
    #[error("--grid `{spec}`: {source}")]
    Value {
        spec: String,
        source: Box<RecipeError>,
    },
    #[error("grid point `{name}`: {source}")]
    Point {
        name: String,
        source: Box<RecipeError>,
    },
    #[error(
        "--grid `{key}`: every value gives the same recipe, so the runs would not differ \
         (is the key ignored, or overridden later?)"
    )]
    NoEffect { key: String },
    #[error(
        "{}: holds a finished run of another recipe (key `{key}` differs): delete the folder \
         to rerun it, or sweep into another output_dir",
        dir.display()
    )]
    Stale { dir: PathBuf, key: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("run `{name}`: {source}")]
    Run { name: String, source: Box<RunError> },
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What happened to each run, and the report over all of them.
#[derive(Debug)]
pub struct SweepOutcome {
    /// Per run, in grid order: whether it ran (false: already finished).
    pub ran: Vec<(PlannedRun, bool)>,
    pub report: Report,
}

/// The grid of `recipe`'s `sweep:` section (if any) with `specs` (`--grid`)
/// on top.
pub fn grid_for(recipe: &Path, specs: &[String]) -> Result<Grid, SweepError> {
    let cli = Grid::from_specs(specs)?;
    let text = std::fs::read_to_string(recipe).map_err(|source| RecipeError::Io {
        path: recipe.to_path_buf(),
        source,
    })?;
    // Malformed YAML is reported by the recipe loader with its line.
    let section = match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(mut root)) => root.shift_remove("sweep"),
        _ => None,
    };
    let file = match section {
        None | Some(Value::Null) => Grid::default(),
        Some(Value::Mapping(section)) => {
            Grid::from_section(&section, &recipe.display().to_string())?
        }
        Some(_) => {
            return Err(GridError {
                source_text: format!("{}: sweep", recipe.display()),
                message: "expected a mapping such as `beta: [0.01, 0.1]`".into(),
            }
            .into());
        }
    };
    Ok(file.merged_with(cli))
}

/// Runs every point of `plan` in order (finished ones are skipped), then
/// writes the report into `plan.root`.
pub fn run_sweep<A: AutodiffBackend>(
    plan: &SweepPlan,
    options: &RunOptions,
    device: &A::Device,
) -> Result<SweepOutcome, SweepError> {
    let total = plan.runs.len();
    let mut ran = Vec::with_capacity(total);
    for (index, run) in plan.runs.iter().enumerate() {
        let finished = run.finished();
        eprintln!(
            "sweep {}/{total}: {} -> {}{}",
            index + 1,
            run.values.join(" "),
            run.dir.display(),
            if finished { " (finished: skipped)" } else { "" }
        );
        if !finished {
            run_recipe::<A>(&plan.recipe, &run.overrides, None, options, false, device).map_err(
                |source| SweepError::Run {
                    name: run.name.clone(),
                    source: Box::new(source),
                },
            )?;
        }
        ran.push((run.clone(), !finished));
    }
    let dirs: Vec<PathBuf> = plan.runs.iter().map(|r| r.dir.clone()).collect();
    let report = write_report(&dirs, &plan.root)?;
    Ok(SweepOutcome { ran, report })
}
