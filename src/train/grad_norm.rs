//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`: the L2
//! norm over all gradients together (burn's own clipping is per parameter).
//! Each parameter counts once, so the tied embedding/LM head counts once.
//!
//! The norm is computed from one squared norm per parameter, added up in the
//! model's order, so that a sharded optimizer (`parallel::shards`), whose
//! replicas each hold some parameters' gradients, gets the same bits.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

/// The squared L2 norm of each parameter's gradient (fp32), in visiting
/// order; 0 for a parameter without one here. Each is summed on the device
/// and all are read back to the host at once: one wait for the device per
/// step, not one per parameter.
pub fn squared_norms<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: &GradientsParams,
) -> Vec<f32> {
    let mut visitor = SquaredNorms::<A> {
        grads,
        squares: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.squares.is_empty() {
        return Vec::new();
    }
    Tensor::cat(visitor.squares, 0)
        .into_data()
        .to_vec::<f32>()
        .expect("f32 squared norms")
}

/// The norm from [`squared_norms`]: summed in fp32 in order, the root in f64.
pub fn norm_from_squares(squares: &[f32]) -> f64 {
    let sum = squares.iter().fold(0f32, |sum, square| sum + square);
    (sum as f64).sqrt()
}

/// The total L2 norm of all gradients of `model`'s parameters.
pub fn global_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    norm_from_squares(&squared_norms::<A, M>(model, grads))
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when that is below 1
/// (torch's rule), returning the norm before clipping.
pub fn clip_global_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    (clip_to_norm(model, grads, max_norm, norm), norm)
}

/// The clipping of [`clip_global_norm`] with the norm already known.
pub fn clip_to_norm<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
    norm: f64,
) -> GradientsParams {
    let coefficient = max_norm / (norm + 1e-6);
    if max_norm <= 0.0 || coefficient >= 1.0 {
        return grads;
    }
    let mut scaler = Scale::<A> {
        grads,
        coefficient,
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut scaler);
    scaler.grads
}

struct SquaredNorms<'a, A: AutodiffBackend> {
    grads: &'a GradientsParams,
    /// One `[1]` fp32 tensor per parameter, on its gradient's device.
    squares: Vec<Tensor<A::InnerBackend, 1>>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for SquaredNorms<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let square = match self.grads.get::<A::InnerBackend, D>(param.id) {
            Some(grad) => grad.cast(DType::F32).powi_scalar(2).sum(),
            None => {
                Tensor::<A::InnerBackend, 1>::zeros([1], &param.val().device()).cast(DType::F32)
            }
        };
        self.squares.push(square);
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
