//! Which micro-batches make each optimizer step, walking the epochs.
//!
//! transformers 5 groups the micro-batches of an epoch `GA` at a time; the
//! last group of an epoch may be short, and no step crosses epochs.
//!
//! transformers 4.38 steps when its global micro-batch counter (never reset
//! between epochs; accelerate 0.27 counts the same way since the Trainer
//! turns off `sync_with_dataloader`) is a multiple of `GA`. The micro-batches
//! left at the end of an epoch therefore join the first step of the next
//! epoch. One exception: when an epoch has no more micro-batches than `GA`,
//! its last micro-batch always ends a step
//! (`is_last_step_and_steps_less_than_grad_acc`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::StepRules;
use crate::train::error::TrainError;

/// Micro-batches of each epoch, in the order the sampler visits them.
pub trait EpochBatches<Batch> {
    fn epoch(&self, index: usize) -> Vec<Batch>;
}

impl<Batch, F: Fn(usize) -> Vec<Batch>> EpochBatches<Batch> for F {
    fn epoch(&self, index: usize) -> Vec<Batch> {
        self(index)
    }
}

/// One optimizer step's micro-batches and where the step sits in the epochs.
#[derive(Debug)]
pub struct StepSpan<Batch> {
    pub batches: Vec<Batch>,
    /// transformers' `state.epoch` after the step: the epoch index plus the
    /// fraction of its epoch that the step's last micro-batch completes.
    pub epoch: f64,
    /// An epoch ended before this step's last micro-batch (its leftover
    /// micro-batches are carried into this step): that epoch's end events
    /// (evaluation) come before this step, on the weights of the step before.
    pub epoch_ended_within: bool,
    /// The step's last micro-batch is the last of its epoch.
    pub ends_epoch: bool,
}

/// Where a cursor is between steps: enough to rebuild it (checkpoints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPosition {
    pub epoch_index: usize,
    /// Micro-batches of that epoch already handed out.
    pub consumed: usize,
    pub global: usize,
    pub started: bool,
}

/// Hands out the micro-batches of one optimizer step at a time.
pub struct StepCursor<'a, Batch> {
    rules: StepRules,
    accumulation: usize,
    source: &'a dyn EpochBatches<Batch>,
    /// The epoch being read and its micro-batches not handed out yet.
    epoch_index: usize,
    pending: VecDeque<Batch>,
    per_epoch: usize,
    /// Micro-batches handed out so far, over the whole run.
    global: usize,
    started: bool,
}

impl<'a, Batch> StepCursor<'a, Batch> {
    pub fn new(rules: StepRules, accumulation: usize, source: &'a dyn EpochBatches<Batch>) -> Self {
        Self {
            rules,
            accumulation: accumulation.max(1),
            source,
            epoch_index: 0,
            pending: VecDeque::new(),
            per_epoch: 0,
            global: 0,
            started: false,
        }
    }

    /// A cursor at `position`: its epoch is read again (the order is a
    /// function of the seed and the epoch) and the consumed part skipped.
    pub fn resume(
        rules: StepRules,
        accumulation: usize,
        source: &'a dyn EpochBatches<Batch>,
        position: CursorPosition,
    ) -> Result<Self, TrainError> {
        let mut cursor = Self::new(rules, accumulation, source);
        if position.started {
            cursor.epoch_index = position.epoch_index;
            let batches = source.epoch(position.epoch_index);
            if batches.is_empty() {
                return Err(TrainError::NoData);
            }
            cursor.per_epoch = batches.len();
            cursor.pending = batches.into_iter().skip(position.consumed).collect();
            cursor.global = position.global;
            cursor.started = true;
        }
        Ok(cursor)
    }

    pub fn position(&self) -> CursorPosition {
        CursorPosition {
            epoch_index: self.epoch_index,
            consumed: self.per_epoch - self.pending.len(),
            global: self.global,
            started: self.started,
        }
    }

    /// The micro-batches of the next optimizer step.
    pub fn next_step(&mut self) -> Result<StepSpan<Batch>, TrainError> {
        let mut batches = Vec::with_capacity(self.accumulation);
        let mut epoch_ended_within = false;
        loop {
            if self.pending.is_empty() {
                if !batches.is_empty() {
                    epoch_ended_within = true;
                }
                self.load_next_epoch()?;
            }
            let batch = self
                .pending
                .pop_front()
                .expect("a loaded epoch has batches");
            batches.push(batch);
            self.global += 1;
            let index_in_epoch = self.per_epoch - self.pending.len() - 1;
            let ends_epoch = self.pending.is_empty();
            if self.closes_step(batches.len(), ends_epoch) {
                return Ok(StepSpan {
                    batches,
                    epoch: self.epoch_index as f64
                        + (index_in_epoch + 1) as f64 / self.per_epoch as f64,
                    epoch_ended_within,
                    ends_epoch,
                });
            }
        }
    }

    /// Whether the micro-batch just handed out ends the step.
    fn closes_step(&self, in_step: usize, ends_epoch: bool) -> bool {
        match self.rules {
            StepRules::Transformers5 => in_step == self.accumulation || ends_epoch,
            StepRules::Transformers438 => {
                self.global.is_multiple_of(self.accumulation)
                    || (ends_epoch && self.per_epoch <= self.accumulation)
            }
        }
    }

    fn load_next_epoch(&mut self) -> Result<(), TrainError> {
        if self.started {
            self.epoch_index += 1;
        }
        self.started = true;
        let batches = self.source.epoch(self.epoch_index);
        if batches.is_empty() {
            return Err(TrainError::NoData);
        }
        self.per_epoch = batches.len();
        self.pending = batches.into();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Micro-batches named `(epoch, index)`.
    fn epochs(per_epoch: usize) -> impl Fn(usize) -> Vec<(usize, usize)> {
        move |e| (0..per_epoch).map(|i| (e, i)).collect()
    }

    fn steps(
        rules: StepRules,
        per_epoch: usize,
        accumulation: usize,
        count: usize,
    ) -> Vec<StepSpan<(usize, usize)>> {
        let source = epochs(per_epoch);
        let mut cursor = StepCursor::new(rules, accumulation, &source);
        (0..count).map(|_| cursor.next_step().unwrap()).collect()
    }

    #[test]
    fn transformers_5_never_crosses_an_epoch() {
        let spans = steps(StepRules::Transformers5, 5, 2, 4);
        let batches: Vec<_> = spans.iter().map(|s| s.batches.clone()).collect();
        assert_eq!(batches[2], [(0, 4)]);
        assert_eq!(batches[3], [(1, 0), (1, 1)]);
        assert!(spans[2].ends_epoch && !spans[3].epoch_ended_within);
        assert_eq!(spans[2].epoch, 1.0);
        assert_eq!(spans[3].epoch, 1.4);
    }

    /// A cursor rebuilt from any position hands out what the original would.
    #[test]
    fn resumed_cursor_continues_exactly() {
        for rules in [StepRules::Transformers5, StepRules::Transformers438] {
            let source = epochs(5);
            let mut original = StepCursor::new(rules, 2, &source);
            for _ in 0..4 {
                original.next_step().unwrap();
            }
            let mut resumed = StepCursor::resume(rules, 2, &source, original.position()).unwrap();
            for _ in 0..6 {
                let (a, b) = (original.next_step().unwrap(), resumed.next_step().unwrap());
                assert_eq!(a.batches, b.batches);
                assert_eq!(a.epoch, b.epoch);
                assert_eq!(a.epoch_ended_within, b.epoch_ended_within);
            }
        }
    }

    /// The legacy fixture's DPO run: 17 micro-batches per epoch, GA 2:
    /// step 9 is micro-batches [17, 1] of epochs [1, 2].
    #[test]
    fn transformers_438_carries_the_leftover_into_the_next_epoch() {
        let spans = steps(StepRules::Transformers438, 17, 2, 16);
        assert_eq!(spans[7].batches, [(0, 14), (0, 15)]);
        assert_eq!(spans[8].batches, [(0, 16), (1, 0)]);
        assert!(spans[8].epoch_ended_within && !spans[8].ends_epoch);
        assert_eq!(spans[8].epoch, 1.0 + 1.0 / 17.0);
        assert_eq!(spans[15].batches, [(1, 13), (1, 14)]);
        assert_eq!(spans[15].epoch, 1.0 + 15.0 / 17.0);
    }

    /// With no more micro-batches per epoch than GA, each epoch's last
    /// micro-batch ends a step, and the global counter still decides after.
    #[test]
    fn transformers_438_short_epochs_step_at_their_end() {
        let spans = steps(StepRules::Transformers438, 3, 4, 3);
        assert_eq!(spans[0].batches, [(0, 0), (0, 1), (0, 2)]);
        assert_eq!(spans[1].batches, [(1, 0)]);
        assert_eq!(spans[2].batches, [(1, 1), (1, 2)]);
    }
}
