//! Each batch's loss and metrics, exchanged so that every replica logs
//! the means over all of them in the single-device order.

use burn::tensor::backend::Backend;

use super::replica::Replica;
use crate::train::error::TrainError;
use crate::train::objective::Metrics;

/// One micro-batch's (or evaluation batch's) numbers as the loop logs them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Position of the batch in its step (or evaluation).
    pub index: usize,
    /// Leading numbers: the loss numerator in training, `[loss, examples]`
    /// in evaluation.
    pub numbers: Vec<f64>,
    pub metrics: Metrics,
}

impl Row {
    /// Numbers on the wire: leading values, then metrics.
    fn width(&self) -> usize {
        self.numbers.len() + self.metrics.len()
    }
}

/// Training step or evaluation: they log different metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Training,
    Evaluation,
}

impl Phase {
    /// As errors name it: "device cpu:1 failed in training step 3".
    pub fn label(self) -> &'static str {
        match self {
            Phase::Training => "training step",
            Phase::Evaluation => "evaluation after step",
        }
    }
}

/// The rows of a phase from every replica. Rows from the others arrive as
/// bare numbers, named after this replica's own latest rows of that phase.
#[derive(Debug, Default)]
pub struct RowExchange {
    training_names: Vec<String>,
    evaluation_names: Vec<String>,
}

impl RowExchange {
    /// The status exchange for rows computed by `local` (or its failure):
    /// returns the common row width, or the first failed replica's error.
    pub fn agree<B: Backend>(
        replica: &Replica,
        device: &B::Device,
        phase: Phase,
        step: usize,
        local: Result<&[Row], &str>,
    ) -> Result<usize, TrainError> {
        let width = local.map(|rows| rows.first().map_or(0, Row::width));
        replica.agree::<B>(device, phase.label(), step, width)
    }

    /// Every replica's rows of a phase (`count` of them) in index order;
    /// `own` are this replica's, `width` the agreed row width.
    #[allow(clippy::too_many_arguments)]
    pub fn gather<B: Backend>(
        &mut self,
        replica: &Replica,
        device: &B::Device,
        phase: Phase,
        step: usize,
        count: usize,
        width: usize,
        own: Vec<Row>,
    ) -> Result<Vec<Row>, TrainError> {
        let names = match phase {
            Phase::Training => &mut self.training_names,
            Phase::Evaluation => &mut self.evaluation_names,
        };
        let lead = own.first().map_or(0, |row| row.numbers.len());
        if let Some(row) = own.first() {
            *names = row.metrics.keys().cloned().collect();
        }
        let local = own
            .into_iter()
            .map(
                |Row {
                     index,
                     mut numbers,
                     metrics,
                 }| {
                    numbers.extend(metrics.into_values());
                    (index, numbers)
                },
            )
            .collect();
        let rows = replica.gather_rows::<B>(device, phase.label(), step, count, width, local)?;
        let lead = if lead > 0 {
            lead
        } else {
            width.saturating_sub(names.len())
        };
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(index, row)| {
                let (numbers, values) = row.split_at(lead.min(row.len()));
                let metrics = names.iter().cloned().zip(values.iter().copied()).collect();
                Row {
                    index,
                    numbers: numbers.to_vec(),
                    metrics,
                }
            })
            .collect())
    }

    /// An evaluation: this replica's share of `count` batches through
    /// `evaluate`, then every replica's rows.
    pub fn evaluate<B: Backend>(
        &mut self,
        replica: &Replica,
        device: &B::Device,
        step: usize,
        count: usize,
        evaluate: &mut dyn FnMut(usize) -> Row,
    ) -> Result<Vec<Row>, TrainError> {
        let local = replica.guard(|| {
            (0..count)
                .filter(|&index| replica.owns(index))
                .map(evaluate)
                .collect::<Vec<_>>()
        });
        let phase = Phase::Evaluation;
        let status = local.as_deref().map_err(String::as_str);
        let width = Self::agree::<B>(replica, device, phase, step, status)?;
        let own = local.map_err(TrainError::Hook)?;
        self.gather::<B>(replica, device, phase, step, count, width, own)
    }
}
