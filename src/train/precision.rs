//! Mixed precision: which dtype a stage computes in, and the gradients'
//! upcast to fp32.
//!
//! With `bf16: true` (or `torch_dtype: bfloat16`) the policy and the
//! reference hold bf16 weights and run bf16 activations; the parts that
//! transformers keeps in fp32 stay fp32 (RMSNorm in `model::gemma::norm`,
//! the rotary tables in `rope`, the attention softmax, the log-softmax and
//! log-prob sums in `train::logps`, the DPO/SFT losses). The backward of
//! bf16 weights yields bf16 gradients; each micro-batch's gradients are
//! upcast here before they are accumulated, so accumulation, the global
//! norm, clipping and AdamW (with its fp32 master weights and moments,
//! `train::adamw`) all run in fp32: "bf16 gradients with fp32
//! accumulation", the decision recorded in `plan::memory`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};

use crate::recipe::{StageConfig, TorchDtype};

/// bf16 when the recipe asks for it (`bf16: true` or `torch_dtype:
/// bfloat16`), fp32 otherwise (`bf16` unset included: on the CPU, fp32 is
/// the faster and the exact choice).
pub fn compute_dtype(stage: &StageConfig) -> DType {
    let bf16 =
        stage.training.bf16 == Some(true) || stage.model.torch_dtype == Some(TorchDtype::Bfloat16);
    match bf16 {
        true => DType::BF16,
        false => DType::F32,
    }
}

/// Every gradient of `model`'s parameters in fp32 (a no-op for an fp32 model).
pub fn grads_to_f32<A: AutodiffBackend, M: AutodiffModule<A>>(
    model: &M,
    grads: GradientsParams,
) -> GradientsParams {
    let mut upcast = Upcast::<A> {
        grads,
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut upcast);
    upcast.grads
}

struct Upcast<A: AutodiffBackend> {
    grads: GradientsParams,
    _backend: std::marker::PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for Upcast<A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let Some(grad) = self.grads.remove::<A::InnerBackend, D>(param.id) else {
            return;
        };
        self.grads.register(param.id, to_f32(grad));
    }
}

/// `tensor` in fp32 (unchanged when it already is).
pub fn to_f32<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    match tensor.dtype() {
        DType::F32 => tensor,
        _ => tensor.cast(DType::F32),
    }
}
