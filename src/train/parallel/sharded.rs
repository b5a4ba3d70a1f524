//! Data parallelism with ZeRO-1 (`shard_optimizer_state`): the steps of
//! [`super::shards`] behind the gradient exchange. The micro-batches of a
//! step go in rounds of one per replica; after each round every gradient is
//! reduced onto its parameter's owner, which alone accumulates, clips and
//! updates it, then broadcasts the new weight.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;

use super::exchange::{GradientExchange, MicroBatch, OptimizerView, StepGradients, device_of};
use super::replica::Replica;
use super::rows::{Phase, RowExchange};
use super::shards::{GatheredState, OptimizerShards};
use crate::model::gemma::Gemma;
use crate::train::adamw::AdamW;
use crate::train::error::TrainError;

pub struct Sharded {
    replica: Replica,
    rows: RowExchange,
    /// Set by `start`, from the model being trained.
    shards: Option<OptimizerShards>,
    /// The whole state, gathered for this step's checkpoint.
    gathered: Option<GatheredState>,
}

impl Sharded {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica,
            rows: RowExchange::default(),
            shards: None,
            gathered: None,
        }
    }

    fn shards(&self) -> &OptimizerShards {
        self.shards
            .as_ref()
            .expect("GradientExchange::start partitions the parameters")
    }
}

impl<A: AutodiffBackend> GradientExchange<A> for Sharded {
    fn start(&mut self, model: &Gemma<A>, optimizer: &mut AdamW<A::InnerBackend>) {
        let shards = OptimizerShards::partition(model, self.replica.rank, self.replica.world);
        shards.retain(optimizer);
        self.shards = Some(shards);
    }

    fn backward(
        &mut self,
        model: &Gemma<A>,
        step: usize,
        count: usize,
        backward: &mut dyn FnMut(usize) -> MicroBatch,
    ) -> Result<StepGradients, TrainError> {
        let (replica, shards) = (&self.replica, self.shards());
        let device = device_of(model);
        let phase = Phase::Training;
        let mut accumulator = GradientsAccumulator::<Gemma<A>>::new();
        let (mut own, mut width) = (Vec::new(), 0);
        for round in 0..count.div_ceil(replica.world) {
            let index = round * replica.world + replica.rank;
            let local = replica.guard(|| {
                replica.fail_if_injected(step);
                (index < count).then(|| backward(index))
            });
            let status = match &local {
                Ok(done) => Ok(done.as_ref().map(|done| std::slice::from_ref(&done.row))),
                Err(error) => Err(error.as_str()),
            };
            let status = status.map(|rows| rows.unwrap_or_default());
            let round_width =
                RowExchange::agree::<A::InnerBackend>(replica, &device, phase, step, status)?;
            width = width.max(round_width);
            let done = local.map_err(TrainError::Hook)?;
            let (grads, row) = done.map(|MicroBatch { grads, row }| (grads, row)).unzip();
            own.extend(row);
            accumulator.accumulate(model, shards.reduce_to_owners(replica, model, grads, step)?);
        }
        let rows = self
            .rows
            .gather::<A::InnerBackend>(replica, &device, phase, step, count, width, own)?;
        Ok(StepGradients {
            grads: accumulator.grads(),
            rows,
        })
    }

    fn global_norm(
        &mut self,
        model: &Gemma<A>,
        grads: &GradientsParams,
        step: usize,
    ) -> Result<f64, TrainError> {
        let device = device_of(model);
        self.shards()
            .global_norm(&self.replica, &device, model, grads, step)
    }

    fn share_update(&mut self, model: Gemma<A>, step: usize) -> Result<Gemma<A>, TrainError> {
        self.shards()
            .broadcast_parameters(&self.replica, model, step)
    }

    fn rows(&mut self) -> (&Replica, &mut RowExchange) {
        (&self.replica, &mut self.rows)
    }

    fn optimizer_view<'a>(
        &'a mut self,
        model: &Gemma<A>,
        optimizer: &'a AdamW<A::InnerBackend>,
        wanted: bool,
        step: usize,
    ) -> Result<OptimizerView<'a, A::InnerBackend>, TrainError> {
        let device = device_of(model);
        let replica = &self.replica;
        let wanted = replica.any::<A::InnerBackend>(&device, wanted, "optimizer gather", step)?;
        self.gathered = match wanted {
            true => self
                .shards()
                .gather_state(replica, &device, model, optimizer, step)?,
            false => None,
        };
        Ok(match &self.gathered {
            Some(state) => OptimizerView::Gathered(state),
            None => OptimizerView::Shard,
        })
    }
}
