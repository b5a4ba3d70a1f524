//! AdamW with `torch.optim.AdamW`'s arithmetic (the handbook's
//! `optim: adamw_torch`): decoupled weight decay applied first, moments by
//! `lerp`/`addcmul`, bias corrections folded into the step size and the
//! denominator, eps added after the square root.
//!
//! Written here rather than taken from burn-optim because its state (moments
//! and step count per parameter) must be saved in checkpoints, sharded across
//! devices and compared bit for bit with an unsharded run.
//!
//! Mixed precision (`bf16: true`): the model's parameters are bf16, but the
//! optimizer keeps an fp32 master copy of each (created from the bf16 value
//! at its first update) and fp32 moments; gradients are upcast to fp32, the
//! update runs on the master and the result is rounded once to the
//! parameter's dtype. Without the master, updates smaller than half a bf16
//! ulp of the weight (2⁻⁹ relative: lr 1e-6 steps on weights of 0.01) would
//! round away. fp32 parameters have no master: they are their own.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};

use super::adamw_update::AdamWUpdateOp;
use super::precision::to_f32;
use align_kernels::AdamWScalars;

/// Hyper-parameters, with transformers' defaults (not burn's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter, flattened.
#[derive(Clone, Debug)]
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
}

/// The optimizer and its state.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Optimizer steps taken (torch's `state["step"]`, the same for all parameters).
    pub step: u64,
    pub moments: HashMap<ParamId, Moments<B>>,
    /// fp32 master weights (flattened) of the parameters that are not fp32.
    pub masters: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: HashMap::new(),
            masters: HashMap::new(),
        }
    }

    /// Keeps the state of the parameters `keep` accepts (this replica's
    /// shard of a sharded optimizer, `parallel::shards`).
    pub fn retain(&mut self, keep: impl Fn(ParamId) -> bool) {
        self.moments.retain(|id, _| keep(*id));
        self.masters.retain(|id, _| keep(*id));
    }
}

impl<B: AdamWUpdateOp> AdamW<B> {
    /// One update of every parameter that has a gradient, at learning rate `lr`.
    pub fn step<A, M>(&mut self, lr: f64, model: M, grads: GradientsParams) -> M
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        self.step += 1;
        let mut mapper = Update::<A> {
            optimizer: self,
            grads,
            lr,
        };
        model.map(&mut mapper)
    }

    /// The new value of one parameter (inner backend, no graph).
    fn update<const D: usize>(
        &mut self,
        id: ParamId,
        value: Tensor<B, D>,
        grad: Tensor<B, D>,
        lr: f64,
    ) -> Tensor<B, D> {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let shape = value.shape();
        let dtype = value.dtype();
        let grad = to_f32(grad.flatten::<1>(0, D - 1));
        let value = match dtype {
            DType::F32 => value.flatten::<1>(0, D - 1),
            _ => match self.masters.remove(&id) {
                Some(master) => master,
                None => value.flatten::<1>(0, D - 1).cast(DType::F32),
            },
        };
        let moments = match self.moments.remove(&id) {
            Some(moments) => moments,
            None => Moments {
                exp_avg: grad.zeros_like(),
                exp_avg_sq: grad.zeros_like(),
            },
        };
        let step = self.step as i32;
        let scalars = AdamWScalars::for_step(lr, weight_decay, (beta1, beta2), eps, step);
        let [value, exp_avg, exp_avg_sq] = B::adamw_update(value, grad, moments, scalars);
        self.moments.insert(
            id,
            Moments {
                exp_avg,
                exp_avg_sq,
            },
        );
        if dtype == DType::F32 {
            return value.reshape(shape);
        }
        self.masters.insert(id, value.clone());
        value.cast(dtype).reshape(shape)
    }
}

/// Walks the model, replacing each parameter by its updated value.
struct Update<'a, A: AutodiffBackend> {
    optimizer: &'a mut AdamW<A::InnerBackend>,
    grads: GradientsParams,
    lr: f64,
}

impl<A: AutodiffBackend<InnerBackend: AdamWUpdateOp>> ModuleMapper<A> for Update<'_, A> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<A, D>>) -> Param<Tensor<A, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<A::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let requires_grad = tensor.is_require_grad();
        let updated = self.optimizer.update(id, tensor.inner(), grad, self.lr);
        let mut tensor = Tensor::from_inner(updated);
        if requires_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};

    /// Two steps on a scalar, against torch.optim.AdamW worked by hand:
    /// lr 0.1, wd 0.01, grads 1.0 then -2.0, from p = 1.0.
    #[test]
    fn matches_torch_adamw_by_hand() {
        let device = cpu_device();
        let mut adam = AdamW::<Cpu>::new(AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        });
        let id = ParamId::new();
        let p = Tensor::<Cpu, 1>::from_data([1.0], &device);
        adam.step = 1;
        let p = adam.update(id, p, Tensor::from_data([1.0], &device), 0.1);
        // step 1: p·(1 − 0.001) = 0.999; m = 0.1, v = 0.001; m̂ = 1, √v̂ = 1 → p = 0.999 − 0.1/(1 + 1e-8)
        let p1 = 0.999 - 0.1 / (1.0 + 1e-8);
        assert!((p.clone().into_scalar() as f64 - p1).abs() < 1e-7);
        adam.step = 2;
        let p = adam.update(id, p, Tensor::from_data([-2.0], &device), 0.1);
        let m: f64 = 0.9 * 0.1 + 0.1 * -2.0;
        let v: f64 = 0.999 * 0.001 + 0.001 * 4.0;
        let denom = v.sqrt() / (1.0f64 - 0.999f64.powi(2)).sqrt() + 1e-8;
        let p2 = p1 * (1.0 - 0.001) - 0.1 / (1.0 - 0.81) * m / denom;
        assert!((p.into_scalar() as f64 - p2).abs() < 1e-6, "{p2}");
    }

    /// bf16 mixed precision: 50 updates of 1e-4 each move an fp32 master
    /// from 1.0 to 0.995, while each alone is below half a bf16 ulp at 1.0
    /// (2⁻⁹) and would round away on a bf16 weight. Master and moments stay
    /// fp32; the parameter is the master rounded to bf16.
    #[test]
    fn bf16_parameters_are_updated_through_fp32_masters() {
        let device = cpu_device();
        let mut adam = AdamW::<Cpu>::new(AdamWConfig::default());
        let id = ParamId::new();
        let mut p = Tensor::<Cpu, 1>::from_data([1.0], &device).cast(DType::BF16);
        for step in 1..=50 {
            adam.step = step;
            let grad = Tensor::<Cpu, 1>::from_data([1.0], &device).cast(DType::BF16);
            p = adam.update(id, p, grad, 1e-4);
        }
        assert_eq!(p.dtype(), DType::BF16);
        let master = adam.masters[&id].clone();
        assert_eq!(master.dtype(), DType::F32);
        assert_eq!(adam.moments[&id].exp_avg.dtype(), DType::F32);
        assert_eq!(adam.moments[&id].exp_avg_sq.dtype(), DType::F32);
        let master = master.into_scalar() as f64;
        assert!((master - 0.995).abs() < 1e-5, "{master}");
        let rounded = p.cast(DType::F32).into_scalar() as f64;
        assert_eq!(rounded, half::bf16::from_f64(master).to_f64());
        assert!(rounded < 1.0, "the bf16 weight moved: {rounded}");
    }
}
