//! `align sweep`: hyperparameter ablations. The cartesian product of a grid
//! of recipe keys runs one point after the other, each in
//! `output_dir/sweep/<key>=<value>,.../` with its own resolved recipe, and
//! ends with `align report` over the runs.
//!
//! Everything that can be wrong with the grid is found before the first run
//! ([`plan`]). A run whose folders already hold finished models is skipped,
//! so a sweep that was stopped resumes where it stopped. A run that fails
//! (a learning rate that diverges) does not stop the others: it is reported
//! with what it logged, and the sweep ends with an error naming it.
//!
//! Imports `recipe`, `train` (to run a point, as `align train` does) and
//! `report`.
//!
//! - [`grid`]: `--grid KEY=V1,V2` and the recipe's `sweep:` section.
//! - [`plan`]: values checked, folders decided, stages shared.

pub mod grid;
pub mod plan;

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub use grid::{Axis, Grid, GridError};
pub use plan::{PlannedRun, PlannedStage, SweepPlan, plan};

use crate::recipe::RecipeError;
use crate::report::{Report, ReportError, write_report};
use crate::train::TrainBackend;
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
    #[error("--grid `{spec}`: {error}")]
    Value {
        spec: String,
        error: Box<RecipeError>,
    },
    #[error("grid point `{name}`: {error}")]
    Point {
        name: String,
        error: Box<RecipeError>,
    },
    #[error(
        "grid key `{key}`: every value gives the same recipe, so the runs would not differ \
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
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What happened to one run.
#[derive(Debug)]
pub enum RunStatus {
    Ran,
    /// Already finished: not run again.
    Skipped,
    Failed(Box<RunError>),
}

/// What happened to each run, and the report over those that logged.
#[derive(Debug)]
pub struct SweepOutcome {
    /// Per run, in grid order.
    pub runs: Vec<(PlannedRun, RunStatus)>,
    /// None if no run logged anything.
    pub report: Option<Report>,
}

impl SweepOutcome {
    /// `name: error` of each failed run.
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter_map(|(run, status)| match status {
                RunStatus::Failed(error) => Some(format!("{}: {error}", run.name)),
                _ => None,
            })
            .collect()
    }
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
/// writes the report into `plan.root`. A failed run is recorded in the
/// outcome, not returned as an error: the other points still run.
pub fn run_sweep<A: TrainBackend>(
    plan: &SweepPlan,
    options: &RunOptions,
    device: &A::Device,
) -> Result<SweepOutcome, SweepError> {
    let total = plan.runs.len();
    let mut runs = Vec::with_capacity(total);
    for (index, run) in plan.runs.iter().enumerate() {
        if crate::train::interrupt::requested() {
            eprintln!("sweep: interrupted; the same command continues where it stopped");
            break;
        }
        let finished = run.finished();
        eprintln!(
            "sweep {}/{total}: {} -> {}{}",
            index + 1,
            run.values.join(" "),
            run.dir.display(),
            if finished { " (finished: skipped)" } else { "" }
        );
        let status = match finished {
            true => RunStatus::Skipped,
            false => run_point::<A>(plan, run, options, device),
        };
        if let RunStatus::Failed(error) = &status {
            eprintln!("sweep {}/{total}: {} failed: {error}", index + 1, run.name);
        }
        runs.push((run.clone(), status));
    }
    let logged: Vec<PathBuf> = plan
        .runs
        .iter()
        .map(|r| r.dir.clone())
        .filter(|dir| dir.join("metrics.jsonl").is_file())
        .collect();
    let report = match logged.is_empty() {
        true => None,
        false => Some(write_report(&logged, &plan.root)?),
    };
    Ok(SweepOutcome { runs, report })
}

fn run_point<A: TrainBackend>(
    plan: &SweepPlan,
    run: &PlannedRun,
    options: &RunOptions,
    device: &A::Device,
) -> RunStatus {
    match run_recipe::<A>(&plan.recipe, &run.overrides, None, options, false, device) {
        Ok(_) => RunStatus::Ran,
        Err(error) => RunStatus::Failed(Box::new(error)),
    }
}
