//! ZeRO-1: AdamW's fp32 state sharded over the replicas.
//!
//! Every parameter has one owner replica, chosen by [`balance`] from the
//! model's structure alone (so all replicas agree without talking). Only
//! the owner keeps the parameter's fp32 moments (and, for bf16 weights, its
//! fp32 master), so each replica holds about `1/N` of the optimizer state.
//! A step then goes:
//!
//! 1. after each round of micro-batches (one per replica), every
//!    parameter's fp32 gradient is reduced (summed) onto its owner, which
//!    accumulates it; the others drop theirs, so no replica accumulates the
//!    full fp32 gradients (`plan::memory`'s `4·P/N`);
//! 2. the global gradient norm: each owner's squared norms, placed at the
//!    parameter's position and summed over replicas (the others add exact
//!    zeros), then added up in the model's order, as on one device;
//! 3. each owner clips and updates its parameters ([`AdamW`] skips the
//!    parameters without a gradient);
//! 4. every parameter is broadcast from its owner, in its dtype.
//!
//! Given the same summed gradients, the update is bit for bit the one of an
//! unsharded AdamW: the owner runs the same arithmetic on the same inputs,
//! the norm adds the same numbers in the same order, and the broadcast
//! copies bits.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveError, PeerId, ReduceOperation, broadcast, reduce};

use super::replica::Replica;
use crate::train::adamw::AdamW;
use crate::train::error::TrainError;
use crate::train::grad_norm::{norm_from_squares, squared_norms};
use crate::train::precision::to_f32;

/// Which replica owns each parameter's optimizer state.
#[derive(Clone, Debug)]
pub struct OptimizerShards {
    rank: usize,
    owners: HashMap<ParamId, usize>,
}

impl OptimizerShards {
    /// The partition of `model`'s parameters over `world` replicas, seen
    /// from replica `rank`.
    pub fn partition<A: AutodiffBackend, M: AutodiffModule<A>>(
        model: &M,
        rank: usize,
        world: usize,
    ) -> Self {
        let parameters = parameters(model);
        let sizes: Vec<usize> = parameters.iter().map(|(_, size)| *size).collect();
        let owners = parameters
            .iter()
            .map(|(id, _)| *id)
            .zip(balance(&sizes, world))
            .collect();
        Self { rank, owners }
    }

    /// Whether this replica keeps the optimizer state of `id`.
    pub fn owns(&self, id: ParamId) -> bool {
        self.owner(id) == self.rank
    }

    fn owner(&self, id: ParamId) -> usize {
        self.owners.get(&id).copied().unwrap_or(0)
    }

    /// Drops the state of the parameters other replicas own.
    pub fn retain<B: Backend>(&self, optimizer: &mut AdamW<B>) {
        optimizer.retain(|id| self.owns(id));
    }

    /// Step 1: each parameter's gradient of this round summed onto its
    /// owner; returns the sums this replica owns. `grads` is `None` for a
    /// replica without a micro-batch in the round (it adds zeros).
    pub fn reduce_to_owners<A: AutodiffBackend, M: AutodiffModule<A>>(
        &self,
        replica: &Replica,
        model: &M,
        grads: Option<GradientsParams>,
        step: usize,
    ) -> Result<GradientsParams, TrainError> {
        let mut visitor = ReduceToOwners::<A> {
            shards: self,
            peer: replica.peer(),
            local: grads.unwrap_or_default(),
            owned: GradientsParams::new(),
            seen: HashSet::new(),
            error: None,
            _backend: std::marker::PhantomData,
        };
        model.visit(&mut visitor);
        match visitor.error {
            Some(error) => Err(replica.collective_error("gradient reduce", step, error)),
            None => Ok(visitor.owned),
        }
    }

    /// Step 2: the global L2 norm of the summed gradients, each replica
    /// holding its own parameters' (`grads`).
    pub fn global_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
        &self,
        replica: &Replica,
        device: &burn::tensor::Device<A::InnerBackend>,
        model: &M,
        grads: &GradientsParams,
        step: usize,
    ) -> Result<f64, TrainError> {
        let squares = squared_norms::<A, M>(model, grads);
        let squares = replica.sum::<A::InnerBackend>(device, squares, "gradient norm", step)?;
        Ok(norm_from_squares(&squares))
    }

    /// Step 4: every parameter as its owner updated it.
    pub fn broadcast_parameters<A: AutodiffBackend, M: AutodiffModule<A>>(
        &self,
        replica: &Replica,
        model: M,
        step: usize,
    ) -> Result<M, TrainError> {
        let mut mapper = BroadcastParameters::<A> {
            shards: self,
            peer: replica.peer(),
            done: HashMap::new(),
            error: None,
        };
        let model = model.map(&mut mapper);
        match mapper.error {
            Some(error) => Err(replica.collective_error("parameter broadcast", step, error)),
            None => Ok(model),
        }
    }

    /// The whole optimizer state, gathered from the owners onto rank 0's
    /// host memory (a checkpoint is written there); `None` on the others.
    /// Host memory, because the whole fp32 state of a large model does not
    /// fit next to the weights on one device: that is why it is sharded.
    pub fn gather_state<A: AutodiffBackend, M: AutodiffModule<A>>(
        &self,
        replica: &Replica,
        device: &burn::tensor::Device<A::InnerBackend>,
        model: &M,
        optimizer: &AdamW<A::InnerBackend>,
        step: usize,
    ) -> Result<Option<GatheredState>, TrainError> {
        let order: Vec<ParamId> = parameters(model).into_iter().map(|(id, _)| id).collect();
        // Which tensors exist: the owners say, two flags per parameter.
        let mut flags = vec![0f32; 2 * order.len()];
        for (index, id) in order.iter().enumerate() {
            if self.owns(*id) {
                flags[2 * index] = optimizer.moments.contains_key(id) as u8 as f32;
                flags[2 * index + 1] = optimizer.masters.contains_key(id) as u8 as f32;
            }
        }
        let flags = replica.sum::<A::InnerBackend>(device, flags, "optimizer gather", step)?;
        let primary = replica.is_primary();
        let mut gathered = GatheredState {
            step: optimizer.step,
            moments: HashMap::new(),
            masters: HashMap::new(),
        };
        let fetch = |tensor: Option<&Tensor<A::InnerBackend, 1>>| {
            let primitive = tensor.map(|t| t.clone().into_primitive().tensor());
            let received = broadcast::<A::InnerBackend>(replica.peer(), primitive)
                .map_err(|e| replica.collective_error("optimizer gather", step, e))?;
            let tensor =
                Tensor::<A::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(received));
            Ok::<_, TrainError>(primary.then(|| tensor.into_data()))
        };
        for (index, id) in order.iter().enumerate() {
            let mine = self.owns(*id);
            if flags[2 * index] > 0.5 {
                let moments = mine.then(|| &optimizer.moments[id]);
                let exp_avg = fetch(moments.map(|m| &m.exp_avg))?;
                let exp_avg_sq = fetch(moments.map(|m| &m.exp_avg_sq))?;
                if let (Some(exp_avg), Some(exp_avg_sq)) = (exp_avg, exp_avg_sq) {
                    gathered.moments.insert(*id, [exp_avg, exp_avg_sq]);
                }
            }
            if flags[2 * index + 1] > 0.5 {
                let master = mine.then(|| &optimizer.masters[id]);
                if let Some(master) = fetch(master)? {
                    gathered.masters.insert(*id, master);
                }
            }
        }
        Ok(primary.then_some(gathered))
    }
}

/// A sharded optimizer state gathered onto the host for a checkpoint.
#[derive(Debug)]
pub struct GatheredState {
    pub step: u64,
    /// `[exp_avg, exp_avg_sq]`, flattened fp32.
    pub moments: HashMap<ParamId, [TensorData; 2]>,
    pub masters: HashMap<ParamId, TensorData>,
}

/// Owners of parameters of `sizes` elements: the largest first, each onto
/// the replica with the fewest elements so far (the lowest rank on ties).
/// Deterministic, so every replica computes the same partition.
pub fn balance(sizes: &[usize], world: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&index| (std::cmp::Reverse(sizes[index]), index));
    let mut load = vec![0usize; world];
    let mut owners = vec![0; sizes.len()];
    for index in order {
        let rank = (0..world).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[rank] += sizes[index];
        owners[index] = rank;
    }
    owners
}

/// The model's parameters in visiting order (a tied one once), with their
/// element counts.
fn parameters<A: AutodiffBackend, M: AutodiffModule<A>>(model: &M) -> Vec<(ParamId, usize)> {
    struct Sizes(Vec<(ParamId, usize)>, HashSet<ParamId>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Sizes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.1.insert(param.id) {
                self.0.push((param.id, param.shape().num_elements()));
            }
        }
    }
    let mut sizes = Sizes(Vec::new(), HashSet::new());
    model.visit(&mut sizes);
    sizes.0
}

struct ReduceToOwners<'a, A: AutodiffBackend> {
    shards: &'a OptimizerShards,
    peer: PeerId,
    local: GradientsParams,
    owned: GradientsParams,
    seen: HashSet<ParamId>,
    error: Option<CollectiveError>,
    _backend: std::marker::PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for ReduceToOwners<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if self.error.is_some() || !self.seen.insert(param.id) {
            return;
        }
        // Upcast here, one parameter at a time: a bf16 run never holds a
        // micro-batch's whole gradient in fp32.
        let local = self
            .local
            .remove::<A::InnerBackend, D>(param.id)
            .map_or_else(|| f32_zeros(param), to_f32);
        let owner = PeerId(self.shards.owner(param.id) as u32);
        let primitive = local.into_primitive().tensor();
        match reduce::<A::InnerBackend>(self.peer, primitive, ReduceOperation::Sum, owner) {
            Ok(Some(sum)) => {
                let sum = Tensor::<A::InnerBackend, D>::from_primitive(TensorPrimitive::Float(sum));
                self.owned.register(param.id, sum);
            }
            Ok(None) => {}
            Err(error) => self.error = Some(error),
        }
    }
}

/// fp32 zeros of a parameter's shape: what a replica without a micro-batch
/// adds (gradients travel in fp32 whatever the weights' dtype).
pub fn f32_zeros<A: AutodiffBackend, const D: usize>(
    param: &Param<Tensor<A, D>>,
) -> Tensor<A::InnerBackend, D> {
    to_f32(param.val().inner().zeros_like())
}

struct BroadcastParameters<'a, A: AutodiffBackend> {
    shards: &'a OptimizerShards,
    peer: PeerId,
    /// A tied parameter met again gets the value already received.
    done: HashMap<ParamId, burn::tensor::ops::FloatTensor<A::InnerBackend>>,
    error: Option<CollectiveError>,
}

impl<A: AutodiffBackend> ModuleMapper<A> for BroadcastParameters<'_, A> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let requires_grad = tensor.is_require_grad();
        let received = match self.done.get(&id) {
            Some(value) => Ok(value.clone()),
            None => {
                let mine = self.shards.owns(id);
                let value = tensor.clone().inner().into_primitive().tensor();
                broadcast::<A::InnerBackend>(self.peer, mine.then_some(value))
            }
        };
        match received {
            Ok(value) => {
                self.done.insert(id, value.clone());
                let inner =
                    Tensor::<A::InnerBackend, D>::from_primitive(TensorPrimitive::Float(value));
                let mut tensor = Tensor::from_inner(inner);
                if requires_grad {
                    tensor = tensor.require_grad();
                }
                Param::from_mapped_value(id, tensor, mapper)
            }
            Err(error) => {
                self.error = Some(error);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_puts_the_largest_first_on_the_least_loaded() {
        // 10 -> r0; 8 -> r1; 5 -> r2; 4 -> r2 (loads 10, 8, 5);
        // 3 -> r1 (10, 8, 9); 1 -> r2 (10, 11, 9).
        assert_eq!(balance(&[1, 8, 10, 3, 5, 4], 3), [2, 1, 0, 1, 2, 2]);
        assert_eq!(balance(&[4, 4, 4], 1), [0, 0, 0]);
        // Ties go to the lowest rank, equal sizes in model order.
        assert_eq!(balance(&[2, 2, 2, 2], 2), [0, 1, 0, 1]);
    }
}
