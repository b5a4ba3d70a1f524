//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`: the L2
//! norm over all gradients together (burn's own clipping is per parameter).
//! Each parameter counts once, so the tied embedding/LM head counts once.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

/// The total L2 norm of all gradients of `model`'s parameters.
pub fn global_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<A> { grads, sum: None };
    model.visit(&mut visitor);
    visitor.sum.map_or(0.0, |sum| {
        let squares: f64 = sum
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("a scalar")[0];
        squares.sqrt()
    })
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when that is below 1
/// (torch's rule), returning the norm before clipping.
pub fn clip_global_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    let coefficient = max_norm / (norm + 1e-6);
    if max_norm <= 0.0 || coefficient >= 1.0 {
        return (grads, norm);
    }
    let mut scaler = Scale::<A> {
        grads,
        coefficient,
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut scaler);
    (scaler.grads, norm)
}

struct SquaredNorm<'a, A: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<A::InnerBackend, 1>>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for SquaredNorm<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        if let Some(grad) = self.grads.get::<A::InnerBackend, D>(param.id) {
            let squares = grad.cast(DType::F32).powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum + squares,
                None => squares,
            });
        }
    }
}

struct Scale<A: AutodiffBackend> {
    grads: GradientsParams,
    coefficient: f64,
    _backend: std::marker::PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for Scale<A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let id: ParamId = param.id;
        if let Some(grad) = self.grads.remove::<A::InnerBackend, D>(id) {
            self.grads.register(id, grad * self.coefficient);
        }
    }
}
