//! One replica's side of data parallelism: which micro-batches of a step
//! are its own, and the exchanges every optimizer step (and evaluation)
//! makes with the other replicas, all through burn-collective's
//! `all_reduce` on the inner (non-autodiff) backend:
//!
//! 1. **status**: one flag and one row width per replica. A replica whose
//!    micro-batches failed (an error or a panic) sends its flag instead of
//!    gradients, so every replica stops at the same point with an error
//!    naming the device and the step, and none waits forever for gradients
//!    that will not come.
//! 2. **rows**: each micro-batch's loss and metrics, placed at the
//!    micro-batch's index in the step (zeros elsewhere) and summed: every
//!    replica ends with all micro-batches' values, in the single-device
//!    order, so the logged means are over all devices (not rank 0's only).
//! 3. **gradients**: the sum over replicas of each parameter's gradient.
//!    Each replica scaled its micro-batch losses by the step's normalizer
//!    over *all* devices' micro-batches, so the sum is the single-device
//!    gradient of the whole step (transformers gets the same from DDP's
//!    mean of per-device losses over `GA x devices` micro-batches).
//!
//! With one replica every exchange is a no-op.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};

use super::shards::f32_zeros;
use crate::train::error::TrainError;

/// This replica's place among all of them (over every node).
#[derive(Clone, Debug)]
pub struct Replica {
    /// Global rank: `node_rank x devices per node + local index`.
    pub rank: usize,
    /// Replicas over all nodes.
    pub world: usize,
    /// Every rank's device, as errors name it (`cpu:1`, `node 1 cuda:3`).
    pub names: Arc<Vec<String>>,
    /// Test hook: this replica panics in its micro-batches of this
    /// optimizer step (1-based), as a device that fails mid-step.
    pub fail_at_step: Option<usize>,
    /// ZeRO-1 (`shard_optimizer_state`, on by default): the optimizer
    /// state is split over the replicas ([`super::shards`]).
    pub shard_optimizer: bool,
}

impl Default for Replica {
    fn default() -> Self {
        Self::single()
    }
}

impl Replica {
    /// The only replica: every exchange is a no-op.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world: 1,
            names: Arc::new(vec!["the device".into()]),
            fail_at_step: None,
            shard_optimizer: false,
        }
    }

    /// The replica that logs, checkpoints and saves the model.
    pub fn is_primary(&self) -> bool {
        self.rank == 0
    }

    pub fn name(&self, rank: usize) -> &str {
        self.names.get(rank).map_or("?", String::as_str)
    }

    /// Whether the optimizer state is sharded in this run.
    pub fn shards_optimizer(&self) -> bool {
        self.shard_optimizer && self.world > 1
    }

    /// Whether any replica passes `true`.
    pub fn any<B: Backend>(
        &self,
        device: &B::Device,
        flag: bool,
        what: &'static str,
        step: usize,
    ) -> Result<bool, TrainError> {
        if self.world == 1 {
            return Ok(flag);
        }
        let summed = self.sum::<B>(device, vec![flag as u8 as f32], what, step)?;
        Ok(summed[0] > 0.5)
    }

    /// Whether the micro-batch at `index` of a step is this replica's:
    /// `rank, rank + world, ...`, accelerate's `BatchSamplerShard` order, so
    /// 2 devices x GA 2 see the micro-batches 1 device x GA 4 sees.
    pub fn owns(&self, index: usize) -> bool {
        index % self.world == self.rank
    }

    /// The test hook [`Replica::fail_at_step`]: a device failing mid-step.
    pub fn fail_if_injected(&self, step: usize) {
        if self.fail_at_step == Some(step) {
            panic!("injected failure (test hook)");
        }
    }

    /// Runs this replica's share of a step. With peers, a panic becomes an
    /// error: the peers are told through [`Replica::agree`] instead of
    /// waiting for this replica's gradients forever.
    pub fn guard<T>(&self, work: impl FnOnce() -> T) -> Result<T, String> {
        if self.world == 1 {
            return Ok(work());
        }
        catch_unwind(AssertUnwindSafe(work)).map_err(|payload| panic_message(payload.as_ref()))
    }

    /// The status exchange: `local` is this replica's row width, or its
    /// failure. Returns the common row width, or the error of the first
    /// failed replica (with its message on that replica itself).
    pub fn agree<B: Backend>(
        &self,
        device: &B::Device,
        phase: &'static str,
        step: usize,
        local: Result<usize, &str>,
    ) -> Result<usize, TrainError> {
        let failed = |rank: usize, error: Option<String>| TrainError::DeviceFailed {
            device: self.name(rank).to_string(),
            phase,
            step,
            error,
        };
        if self.world == 1 {
            return local.map_err(|error| failed(0, Some(error.to_string())));
        }
        let world = self.world;
        let mut status = vec![0f32; 2 * world];
        match local {
            Ok(width) => status[world + self.rank] = width as f32,
            Err(_) => status[self.rank] = 1.0,
        }
        let summed = self.sum::<B>(device, status, phase, step)?;
        if let Err(error) = local {
            return Err(failed(self.rank, Some(error.to_string())));
        }
        if let Some(rank) = (0..world).find(|&rank| summed[rank] > 0.5) {
            return Err(failed(rank, None));
        }
        let mut widths: Vec<usize> = summed[world..]
            .iter()
            .map(|&w| w.round() as usize)
            .filter(|&w| w > 0)
            .collect();
        widths.dedup();
        match widths[..] {
            [] => Ok(0),
            [width] => Ok(width),
            _ => Err(TrainError::Hook(format!(
                "{phase} {step}: the replicas logged different metrics (row widths {widths:?})"
            ))),
        }
    }

    /// The rows exchange: `local` holds this replica's rows at their index
    /// among `count`; returns all rows. Values travel as two f32 (the value
    /// and its rounding error), so an f64 keeps 48 bits and an f32 is exact.
    pub fn gather_rows<B: Backend>(
        &self,
        device: &B::Device,
        phase: &'static str,
        step: usize,
        count: usize,
        width: usize,
        local: Vec<(usize, Vec<f64>)>,
    ) -> Result<Vec<Vec<f64>>, TrainError> {
        if self.world == 1 {
            let mut rows = vec![Vec::new(); count];
            for (index, row) in local {
                rows[index] = row;
            }
            return Ok(rows);
        }
        let mut wire = vec![0f32; count * 2 * width];
        for (index, row) in local {
            for (column, value) in row.into_iter().enumerate().take(width) {
                let high = value as f32;
                let low = (value - high as f64) as f32;
                let at = (index * width + column) * 2;
                wire[at] = high;
                wire[at + 1] = low;
            }
        }
        let summed = self.sum::<B>(device, wire, phase, step)?;
        Ok(summed
            .chunks(2 * width.max(1))
            .take(count)
            .map(|row| {
                row.chunks(2)
                    .map(|pair| pair[0] as f64 + pair[1] as f64)
                    .collect()
            })
            .collect())
    }

    /// The gradients exchange: every parameter's gradient summed over the
    /// replicas (zeros from a replica that had no micro-batch this step).
    pub fn sum_gradients<A: AutodiffBackend, M: AutodiffModule<A>>(
        &self,
        model: &M,
        grads: GradientsParams,
        step: usize,
    ) -> Result<GradientsParams, TrainError> {
        if self.world == 1 {
            return Ok(grads);
        }
        let mut visitor = SumGradients::<A> {
            peer: self.peer(),
            grads,
            seen: HashSet::new(),
            error: None,
            _backend: std::marker::PhantomData,
        };
        model.visit(&mut visitor);
        match visitor.error {
            Some(error) => Err(self.collective_error("gradient all-reduce", step, error)),
            None => Ok(visitor.grads),
        }
    }

    pub(crate) fn peer(&self) -> PeerId {
        PeerId(self.rank as u32)
    }

    /// All-reduce (sum) of a host vector.
    pub(crate) fn sum<B: Backend>(
        &self,
        device: &B::Device,
        values: Vec<f32>,
        phase: &'static str,
        step: usize,
    ) -> Result<Vec<f32>, TrainError> {
        let len = values.len();
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(values, [len]), device);
        let summed = all_reduce::<B>(
            self.peer(),
            tensor.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|error| self.collective_error(phase, step, error))?;
        let summed = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed));
        Ok(summed
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data"))
    }

    pub(crate) fn collective_error(
        &self,
        what: &'static str,
        step: usize,
        error: CollectiveError,
    ) -> TrainError {
        TrainError::Collective {
            device: self.name(self.rank).to_string(),
            what,
            step,
            error: format!("{error:?}"),
        }
    }
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        format!("panicked: {text}")
    } else if let Some(text) = payload.downcast_ref::<String>() {
        format!("panicked: {text}")
    } else {
        "panicked".to_string()
    }
}

struct SumGradients<A: AutodiffBackend> {
    peer: PeerId,
    grads: GradientsParams,
    /// A tied parameter is visited once per use; summed once.
    seen: HashSet<ParamId>,
    error: Option<CollectiveError>,
    _backend: std::marker::PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for SumGradients<A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if self.error.is_some() || !self.seen.insert(param.id) {
            return;
        }
        let local = self
            .grads
            .remove::<A::InnerBackend, D>(param.id)
            .unwrap_or_else(|| f32_zeros(param));
        let primitive = local.into_primitive().tensor();
        match all_reduce::<A::InnerBackend>(self.peer, primitive, ReduceOperation::Sum) {
            Ok(sum) => {
                let sum = Tensor::<A::InnerBackend, D>::from_primitive(TensorPrimitive::Float(sum));
                self.grads.register(param.id, sum);
            }
            Err(error) => self.error = Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_go_round_robin() {
        let replica = |rank| Replica {
            rank,
            world: 3,
            ..Replica::single()
        };
        let owned = |rank| {
            (0..7)
                .filter(|&i| replica(rank).owns(i))
                .collect::<Vec<_>>()
        };
        assert_eq!(owned(0), [0, 3, 6]);
        assert_eq!(owned(1), [1, 4]);
        assert_eq!(owned(2), [2, 5]);
    }

    #[test]
    fn one_replica_exchanges_nothing() {
        let replica = Replica::single();
        let device = Default::default();
        let rows = replica
            .gather_rows::<crate::backend::Cpu>(
                &device,
                "t",
                1,
                2,
                1,
                vec![(1, vec![2.0]), (0, vec![1.0])],
            )
            .unwrap();
        assert_eq!(rows, [vec![1.0], vec![2.0]]);
        let error = replica
            .agree::<crate::backend::Cpu>(&device, "training step", 3, Err("boom"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "device the device failed in training step 3: boom"
        );
    }
}
