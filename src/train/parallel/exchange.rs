//! The gradient exchange: the one seam between the training loop and data
//! parallelism. The loop (`trainer.rs`) reads the same for one device and
//! for many; every exchange between replicas happens behind this trait.
//!
//! A training step asks the exchange three things, in this order:
//!
//! 1. [`GradientExchange::backward`]: run this replica's share of the
//!    step's micro-batches and return the gradients this replica applies
//!    (fp32, summed over every micro-batch of every replica; under ZeRO-1
//!    only the parameters it owns) with every micro-batch's row, in the
//!    single-device order;
//! 2. [`GradientExchange::global_norm`]: the L2 norm over all of the
//!    step's gradients, for clipping;
//! 3. [`GradientExchange::share_update`]: after AdamW, every replica's
//!    weights are the same again.
//!
//! Evaluation ([`GradientExchange::evaluate`]) and checkpoints
//! ([`GradientExchange::optimizer_view`]) go through it too.
//!
//! Implementations: [`Replicated`] (one device, or replicas that each keep
//! the whole optimizer state: gradients all-reduced) and [`Sharded`]
//! (ZeRO-1: each parameter's optimizer state on one owner).

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Device;
use burn::tensor::backend::AutodiffBackend;

use super::replica::Replica;
use super::replicated::Replicated;
use super::rows::{Row, RowExchange};
use super::sharded::Sharded;
use super::shards::GatheredState;
use crate::model::gemma::Gemma;
use crate::model::hf::PendingTensor;
use crate::train::adamw::AdamW;
use crate::train::error::TrainError;

/// One micro-batch's backward: its gradients in the weights' dtype (its
/// loss already scaled by the step's normalizer) and its row.
pub struct MicroBatch {
    pub grads: GradientsParams,
    pub row: Row,
}

/// A training step after the exchange.
pub struct StepGradients {
    /// The fp32 gradients this replica applies.
    pub grads: GradientsParams,
    /// Every micro-batch's row, in step order, whichever replica ran it.
    pub rows: Vec<Row>,
}

/// Where the replicas meet. With one replica every exchange is a no-op.
pub trait GradientExchange<A: AutodiffBackend> {
    /// Called once before the first step: ZeRO-1 partitions the
    /// parameters here and drops the optimizer state of those it does not own.
    fn start(&mut self, model: &Gemma<A>, optimizer: &mut AdamW<A::InnerBackend>);

    /// Step 1: `backward` runs the micro-batch at an index of the step's
    /// `count`; this replica runs its own share of them.
    fn backward(
        &mut self,
        model: &Gemma<A>,
        step: usize,
        count: usize,
        backward: &mut dyn FnMut(usize) -> MicroBatch,
    ) -> Result<StepGradients, TrainError>;

    /// Step 2: the global gradient norm (torch's `clip_grad_norm_` total).
    fn global_norm(
        &mut self,
        model: &Gemma<A>,
        grads: &GradientsParams,
        step: usize,
    ) -> Result<f64, TrainError>;

    /// Step 3: the weights after the optimizer step, the same on every replica.
    fn share_update(&mut self, model: Gemma<A>, step: usize) -> Result<Gemma<A>, TrainError>;

    /// This replica and its rows exchange.
    fn rows(&mut self) -> (&Replica, &mut RowExchange);

    /// Every evaluation batch's row (`evaluate` runs one, by index): each
    /// replica evaluates its share, the rows are exchanged.
    fn evaluate(
        &mut self,
        model: &Gemma<A>,
        step: usize,
        count: usize,
        evaluate: &mut dyn FnMut(usize) -> Row,
    ) -> Result<Vec<Row>, TrainError> {
        let device = device_of(model);
        let (replica, rows) = self.rows();
        rows.evaluate::<A::InnerBackend>(replica, &device, step, count, evaluate)
    }

    /// The optimizer state as a checkpoint of this step reads it; `wanted`:
    /// this replica's hooks will write one (ZeRO-1 gathers the shards then).
    fn optimizer_view<'a>(
        &'a mut self,
        model: &Gemma<A>,
        optimizer: &'a AdamW<A::InnerBackend>,
        wanted: bool,
        step: usize,
    ) -> Result<OptimizerView<'a, A::InnerBackend>, TrainError>;
}

/// The optimizer state as a checkpoint reads it.
pub enum OptimizerView<'a, B: burn::tensor::backend::Backend> {
    /// All of it, on this replica.
    Whole(&'a AdamW<B>),
    /// A sharded state gathered onto this replica's host.
    Gathered(&'a GatheredState),
    /// A sharded state that was not gathered: only this replica's share.
    Shard,
}

impl<B: burn::tensor::backend::Backend> Clone for OptimizerView<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: burn::tensor::backend::Backend> Copy for OptimizerView<'_, B> {}

impl<B: burn::tensor::backend::Backend> OptimizerView<'_, B> {
    /// AdamW's step count; `None` for an ungathered shard.
    pub fn step(&self) -> Option<u64> {
        match self {
            OptimizerView::Whole(optimizer) => Some(optimizer.step),
            OptimizerView::Gathered(state) => Some(state.step),
            OptimizerView::Shard => None,
        }
    }

    /// `[exp_avg, exp_avg_sq]` of parameter `id`, flattened fp32, read
    /// from the device only when a checkpoint writes them.
    pub fn moments(&self, id: ParamId) -> Option<[PendingTensor<'_>; 2]> {
        match self {
            OptimizerView::Whole(optimizer) => optimizer.moments.get(&id).map(|m| {
                [
                    PendingTensor::on_device(m.exp_avg.clone()),
                    PendingTensor::on_device(m.exp_avg_sq.clone()),
                ]
            }),
            OptimizerView::Gathered(state) => {
                state.moments.get(&id).map(|[exp_avg, exp_avg_sq]| {
                    [
                        PendingTensor::on_host(exp_avg),
                        PendingTensor::on_host(exp_avg_sq),
                    ]
                })
            }
            OptimizerView::Shard => None,
        }
    }

    /// The fp32 master weight of parameter `id` (bf16 parameters only).
    pub fn master(&self, id: ParamId) -> Option<PendingTensor<'_>> {
        match self {
            OptimizerView::Whole(optimizer) => optimizer
                .masters
                .get(&id)
                .map(|m| PendingTensor::on_device(m.clone())),
            OptimizerView::Gathered(state) => state.masters.get(&id).map(PendingTensor::on_host),
            OptimizerView::Shard => None,
        }
    }
}

/// The exchange for `replica`'s place in its run.
pub fn exchange_for<A: AutodiffBackend>(replica: &Replica) -> Box<dyn GradientExchange<A>> {
    match replica.shards_optimizer() {
        true => Box::new(Sharded::new(replica.clone())),
        false => Box::new(Replicated::new(replica.clone())),
    }
}

/// The device of a model's parameters (on the inner backend).
pub(super) fn device_of<A: AutodiffBackend>(model: &Gemma<A>) -> Device<A::InnerBackend> {
    model
        .devices()
        .into_iter()
        .next()
        .expect("a model has parameters")
}
