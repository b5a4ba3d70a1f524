//! What a stage does after each optimizer step besides training: move the
//! progress bar, write the checkpoints `save_strategy` asks for, and on
//! Ctrl-C/SIGTERM write one more and stop.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{CheckpointContents, TrainerState, save_checkpoint};
use super::error::TrainError;
use super::interrupt;
use super::trainer::{StepHooks, StepView};
use crate::log::History;
use crate::log::progress::{Progress, StepLine};
use crate::recipe::SaveStrategy;

/// When checkpoints are written.
#[derive(Clone, Debug, PartialEq)]
pub struct SavePolicy {
    pub strategy: SaveStrategy,
    /// `save_steps`, resolved against the total (ratios allowed).
    pub every: usize,
    pub total_limit: Option<usize>,
}

impl SavePolicy {
    fn due(&self, step: usize, epoch_done: bool) -> bool {
        match self.strategy {
            SaveStrategy::No => false,
            SaveStrategy::Steps => self.every > 0 && step.is_multiple_of(self.every),
            SaveStrategy::Epoch => epoch_done,
        }
    }
}

/// Everything a checkpoint needs that the loop does not know.
pub struct CheckpointSetup<'a> {
    pub output_dir: &'a Path,
    pub recipe_yaml: String,
    pub tokenizer_dir: Option<&'a Path>,
    pub finish: &'a dyn Fn(&Path) -> Result<(), String>,
    pub policy: SavePolicy,
}

pub struct StageHooks<'a> {
    pub progress: Option<Rc<RefCell<Progress>>>,
    pub history: Rc<RefCell<History>>,
    pub checkpoints: CheckpointSetup<'a>,
    /// Test hook: behave as if Ctrl-C came during this step.
    pub stop_after_step: Option<usize>,
    /// Whether the run stops after a step, decided once per step (the
    /// signal may come between the two questions the loop asks).
    pub stopping: Option<(usize, bool)>,
}

impl StageHooks<'_> {
    /// Whether to stop after `step` (Ctrl-C, SIGTERM or the test hook).
    fn stops_after(&mut self, step: usize) -> bool {
        match self.stopping {
            Some((decided, stop)) if decided == step => stop,
            _ => {
                let stop = interrupt::requested() || self.stop_after_step == Some(step);
                self.stopping = Some((step, stop));
                stop
            }
        }
    }

    fn save<A: AutodiffBackend>(&self, view: &StepView<'_, A>) -> Result<PathBuf, TrainError> {
        let setup = &self.checkpoints;
        let state = TrainerState {
            global_step: view.state.step,
            epoch: view.state.epoch,
            max_steps: view.total_steps,
            log_history: self.history.borrow().0.clone(),
            best_metric: None,
            best_model_checkpoint: None,
            align_loop: view.state.clone(),
        };
        let contents = CheckpointContents {
            model: view.model,
            optimizer: view.optimizer,
            state,
            recipe_yaml: &setup.recipe_yaml,
            tokenizer_dir: setup.tokenizer_dir,
            finish: setup.finish,
        };
        save_checkpoint(setup.output_dir, contents, setup.policy.total_limit)
            .map_err(|e| TrainError::Hook(format!("writing a checkpoint: {e}")))
    }
}

impl<A: AutodiffBackend> StepHooks<A> for StageHooks<'_> {
    fn after_step(&mut self, view: &StepView<'_, A>) -> Result<(), TrainError> {
        let step = view.state.step;
        if let Some(progress) = &self.progress {
            let accuracies: Vec<f64> = view
                .metrics
                .iter()
                .filter_map(|m| m.get("rewards/accuracies").copied())
                .collect();
            progress.borrow_mut().step(&StepLine {
                step,
                loss: view.loss,
                accuracy: (!accuracies.is_empty())
                    .then(|| accuracies.iter().sum::<f64>() / accuracies.len() as f64),
                num_tokens: view.state.num_tokens,
            });
        }
        let stop = self.stops_after(step);
        let last = step == view.total_steps;
        if stop && !last {
            let dir = self.save(view)?;
            if let Some(progress) = &self.progress {
                progress.borrow().clear();
            }
            return Err(TrainError::Stopped(format!(
                "interrupted after step {step}; checkpoint written to {}. \
                 Rerun the same command with --resume to continue exactly from there",
                dir.display()
            )));
        }
        if self.checkpoints.policy.due(step, view.epoch_done) {
            self.save(view)?;
        }
        Ok(())
    }

    fn wants_optimizer_state(&mut self, step: usize, total: usize, epoch_done: bool) -> bool {
        let interrupted = self.stops_after(step) && step != total;
        interrupted || self.checkpoints.policy.due(step, epoch_done)
    }
}
