//! Planning a sweep before anything runs: every grid value goes through the
//! recipe loader (unknown keys, wrong types and bad combinations fail here,
//! with the loader's own messages), every run gets its folders, and folders
//! that already hold a finished run of another recipe are refused.
//!
//! Stages are shared where the grid does not change them: sweeping the DPO
//! `beta` of an SFT -> DPO recipe trains the SFT model once
//! (`sft_output_dir/sweep/shared`) and each DPO run starts from it. A stage's
//! folder is named by the grid keys that change its resolved config; the
//! last stage, whose folder is the run's, is named by all of them.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::SweepError;
use super::grid::{Grid, Point};
use crate::recipe::{Recipe, StageConfig, StageKind};
use crate::train::run::is_finished;

/// Folder of a stage that no grid key changes.
const SHARED: &str = "shared";

/// Everything a sweep will do, decided up front.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The recipe (chained) or handbook config the runs start from.
    pub recipe: PathBuf,
    /// The user's `--set` overrides, applied to every run before the grid's.
    pub set: Vec<String>,
    pub grid: Grid,
    pub runs: Vec<PlannedRun>,
    /// `output_dir/sweep` of the last stage: the runs' parent, where the
    /// report goes.
    pub root: PathBuf,
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// `key=value,...` over every axis: the run folder's name.
    pub name: String,
    /// The grid's values for this run, `KEY=VALUE` each.
    pub values: Vec<String>,
    /// The `--set` list that runs it: the user's, the grid's, the folders'.
    pub overrides: Vec<String>,
    /// The last stage's output folder.
    pub dir: PathBuf,
    pub stages: Vec<PlannedStage>,
}

/// One stage of one run.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub kind: StageKind,
    pub output_dir: PathBuf,
    /// It already holds a finished model of this very config: skipped.
    pub finished: bool,
}

impl PlannedRun {
    /// Every stage already finished: the run is skipped.
    pub fn finished(&self) -> bool {
        self.stages.iter().all(|s| s.finished)
    }
}

/// Plans the sweep of `grid` over `recipe` with the user's `set` overrides.
pub fn plan(recipe: &Path, set: &[String], grid: Grid) -> Result<SweepPlan, SweepError> {
    if grid.axes.is_empty() {
        return Err(SweepError::NothingToSweep);
    }
    let base = Recipe::load(recipe, set)?;
    check_stage_kinds(&base)?;
    check_each_value(recipe, set, &grid)?;
    let points = grid.points();
    let stage_dirs = stage_dirs(recipe, set, &grid, &points, &base)?;
    let mut runs = Vec::with_capacity(points.len());
    for (point, dirs) in points.into_iter().zip(stage_dirs) {
        runs.push(plan_run(recipe, set, &grid, point, dirs, &base)?);
    }
    check_distinct(&runs)?;
    let last = base.stages.last().expect("a recipe has a stage");
    Ok(SweepPlan {
        recipe: recipe.to_path_buf(),
        set: set.to_vec(),
        grid,
        runs,
        root: Path::new(&last.training.output_dir).join("sweep"),
    })
}

/// Stage folders are set per kind (`sft.output_dir=`), so a chain may hold
/// each kind once.
fn check_stage_kinds(base: &Recipe) -> Result<(), SweepError> {
    for (i, stage) in base.stages.iter().enumerate() {
        if base.stages[..i].iter().any(|s| s.kind == stage.kind) {
            return Err(SweepError::Unsupported(format!(
                "{}: two {} stages; a sweep sets each stage's output_dir by its kind",
                base.path.display(),
                stage.kind.name()
            )));
        }
    }
    Ok(())
}

/// Each value alone, so an error names the value at fault.
fn check_each_value(recipe: &Path, set: &[String], grid: &Grid) -> Result<(), SweepError> {
    for axis in &grid.axes {
        for value in &axis.values {
            let spec = format!("{}={}", axis.key, super::grid::flow(value));
            let mut overrides = set.to_vec();
            overrides.push(spec.clone());
            Recipe::load(recipe, &overrides).map_err(|error| SweepError::Value {
                spec,
                error: Box::new(error),
            })?;
        }
    }
    Ok(())
}

/// Decides each stage's folder for every point, stage by stage: a stage's
/// config depends on the folders of the stages before it (DPO starts from
/// the SFT output).
fn stage_dirs(
    recipe: &Path,
    set: &[String],
    grid: &Grid,
    points: &[Point],
    base: &Recipe,
) -> Result<Vec<Vec<PathBuf>>, SweepError> {
    let mut dirs: Vec<Vec<PathBuf>> = vec![Vec::new(); points.len()];
    let mut changes_something = vec![false; grid.axes.len()];
    let last = base.stages.len() - 1;
    for (index, stage) in base.stages.iter().enumerate() {
        let mut signatures = Vec::with_capacity(points.len());
        for (point, before) in points.iter().zip(&dirs) {
            let overrides = run_overrides(set, grid, point, before, base);
            let loaded = load_point(recipe, &overrides, grid, point)?;
            signatures.push(signature(&loaded.stages[index]));
        }
        let changing = changing_axes(grid, points, &signatures);
        for &axis in &changing {
            changes_something[axis] = true;
        }
        let keep: Vec<usize> = match index == last {
            true => (0..grid.axes.len()).collect(),
            false => changing,
        };
        let parent = Path::new(&stage.training.output_dir).join("sweep");
        for (point, stage_dirs) in points.iter().zip(&mut dirs) {
            let name = match keep.is_empty() {
                true => SHARED.to_string(),
                false => grid.folder_name(point, &keep),
            };
            stage_dirs.push(parent.join(name));
        }
    }
    // A single value changes nothing by construction; it only names the run.
    let no_effect = (0..grid.axes.len())
        .find(|&axis| grid.axes[axis].values.len() > 1 && !changes_something[axis]);
    if let Some(axis) = no_effect {
        return Err(SweepError::NoEffect {
            key: grid.axes[axis].key.clone(),
        });
    }
    Ok(dirs)
}

/// The axes along which the signature changes: two points that differ on
/// that axis alone have different configs.
fn changing_axes(grid: &Grid, points: &[Point], signatures: &[Mapping]) -> Vec<usize> {
    (0..grid.axes.len())
        .filter(|&axis| {
            points.iter().enumerate().any(|(p, point)| {
                points.iter().enumerate().any(|(q, other)| {
                    let differs_on_axis_only =
                        (0..point.len()).all(|a| (a == axis) != (point[a] == other[a]));
                    differs_on_axis_only && signatures[p] != signatures[q]
                })
            })
        })
        .collect()
}

/// A stage's resolved config without its output location.
fn signature(stage: &StageConfig) -> Mapping {
    let mut map = stage.to_mapping();
    map.shift_remove("output_dir");
    map.shift_remove("logging_dir");
    map
}

/// The user's overrides, the point's values, then the stage folders decided
/// so far (scoped by kind in a chain).
fn run_overrides(
    set: &[String],
    grid: &Grid,
    point: &Point,
    dirs: &[PathBuf],
    base: &Recipe,
) -> Vec<String> {
    let mut overrides = set.to_vec();
    overrides.extend(grid.overrides(point));
    for (stage, dir) in base.stages.iter().zip(dirs) {
        let quoted = super::grid::flow(&Value::from(dir.to_string_lossy().into_owned()));
        overrides.push(match base.chained {
            true => format!("{}.output_dir={quoted}", stage.kind.name()),
            false => format!("output_dir={quoted}"),
        });
    }
    overrides
}

fn load_point(
    recipe: &Path,
    overrides: &[String],
    grid: &Grid,
    point: &Point,
) -> Result<Recipe, SweepError> {
    Recipe::load(recipe, overrides).map_err(|error| SweepError::Point {
        name: grid.folder_name(point, &(0..grid.axes.len()).collect::<Vec<_>>()),
        error: Box::new(error),
    })
}

fn plan_run(
    recipe: &Path,
    set: &[String],
    grid: &Grid,
    point: Point,
    dirs: Vec<PathBuf>,
    base: &Recipe,
) -> Result<PlannedRun, SweepError> {
    let overrides = run_overrides(set, grid, &point, &dirs, base);
    let loaded = load_point(recipe, &overrides, grid, &point)?;
    let mut stages = Vec::with_capacity(dirs.len());
    for (stage, dir) in loaded.stages.iter().zip(&dirs) {
        let finished = is_finished(stage);
        if finished {
            check_same_recipe(stage, dir)?;
        }
        stages.push(PlannedStage {
            kind: stage.kind,
            output_dir: dir.clone(),
            finished,
        });
    }
    let all: Vec<usize> = (0..grid.axes.len()).collect();
    Ok(PlannedRun {
        name: grid.folder_name(&point, &all),
        values: grid.overrides(&point),
        overrides,
        dir: dirs.last().expect("a recipe has a stage").clone(),
        stages,
    })
}

/// A finished folder is reused only if it ran this config: a sweep resumed
/// with other `--set` values must not report stale runs as new ones.
fn check_same_recipe(stage: &StageConfig, dir: &Path) -> Result<(), SweepError> {
    let path = dir.join("recipe.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let stored: Mapping = serde_yaml_ng::from_str(&text).unwrap_or_default();
    let planned: Mapping =
        serde_yaml_ng::from_str(&stage.to_yaml()).expect("a resolved stage reads back");
    let differing = planned
        .iter()
        .find(|(key, value)| stored.get(*key) != Some(*value))
        .map(|(key, _)| key)
        .or_else(|| stored.keys().find(|key| !planned.contains_key(*key)));
    match differing {
        None => Ok(()),
        Some(key) => Err(SweepError::Stale {
            dir: dir.to_path_buf(),
            key: key.as_str().unwrap_or_default().to_string(),
        }),
    }
}

/// Names that differ only in characters a file system refuses collide.
fn check_distinct(runs: &[PlannedRun]) -> Result<(), SweepError> {
    for (i, run) in runs.iter().enumerate() {
        if let Some(other) = runs[..i].iter().find(|r| r.dir == run.dir) {
            return Err(SweepError::Unsupported(format!(
                "grid points `{}` and `{}` would share the folder {}",
                other.values.join(" "),
                run.values.join(" "),
                run.dir.display()
            )));
        }
    }
    Ok(())
}
