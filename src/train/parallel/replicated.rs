//! Data parallelism with the whole optimizer state on every replica (and
//! the single device, its one-replica case): each replica accumulates its
//! micro-batches' gradients in fp32, the sums are all-reduced, and every
//! replica clips and steps AdamW on the same numbers.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;

use super::exchange::{GradientExchange, MicroBatch, OptimizerView, StepGradients, device_of};
use super::replica::Replica;
use super::rows::{Phase, RowExchange};
use crate::model::gemma::Gemma;
use crate::train::adamw::AdamW;
use crate::train::error::TrainError;
use crate::train::grad_norm::global_norm;
use crate::train::precision::grads_to_f32;

pub struct Replicated {
    replica: Replica,
    rows: RowExchange,
}

impl Replicated {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            rows: RowExchange::default(),
        }
    }
}

impl<A: AutodiffBackend> GradientExchange<A> for Replicated {
    fn start(&mut self, _: &Gemma<A>, _: &mut AdamW<A::InnerBackend>) {}

    fn backward(
        &mut self,
        model: &Gemma<A>,
        step: usize,
        count: usize,
        backward: &mut dyn FnMut(usize) -> MicroBatch,
    ) -> Result<StepGradients, TrainError> {
        let replica = &self.replica;
        let local = replica.guard(|| {
            replica.fail_if_injected(step);
            let mut accumulator = GradientsAccumulator::<Gemma<A>>::new();
            let mut rows = Vec::new();
            for index in (0..count).filter(|&index| replica.owns(index)) {
                let MicroBatch { grads, row } = backward(index);
                // bf16 gradients are accumulated (and reduced, clipped, applied) in fp32.
                accumulator.accumulate(model, grads_to_f32(model, grads));
                rows.push(row);
            }
            (accumulator.grads(), rows)
        });
        let device = device_of(model);
        let status = local
            .as_ref()
            .map(|(_, rows)| rows.as_slice())
            .map_err(String::as_str);
        let phase = Phase::Training;
        let width = RowExchange::agree::<A::InnerBackend>(replica, &device, phase, step, status)?;
        let (grads, own) = local.map_err(TrainError::Hook)?;
        let rows = self
            .rows
            .gather::<A::InnerBackend>(replica, &device, phase, step, count, width, own)?;
        let grads = replica.sum_gradients(model, grads, step)?;
        Ok(StepGradients { grads, rows })
    }

    fn global_norm(
        &mut self,
        model: &Gemma<A>,
        grads: &GradientsParams,
        _step: usize,
    ) -> Result<f64, TrainError> {
        Ok(global_norm(model, grads))
    }

    fn share_update(&mut self, model: Gemma<A>, _step: usize) -> Result<Gemma<A>, TrainError> {
        Ok(model)
    }

    fn rows(&mut self) -> (&Replica, &mut RowExchange) {
        (&self.replica, &mut self.rows)
    }

    fn optimizer_view<'a>(
        &'a mut self,
        _: &Gemma<A>,
        optimizer: &'a AdamW<A::InnerBackend>,
        _wanted: bool,
        _step: usize,
    ) -> Result<OptimizerView<'a, A::InnerBackend>, TrainError> {
        Ok(OptimizerView::Whole(optimizer))
    }
}
