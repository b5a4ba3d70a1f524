//! Gemma's RMSNorm: `x / sqrt(mean(x²) + eps) * (1 + weight)`, computed in fp32
//! and cast back to the input dtype at the end, as transformers'
//! `GemmaRMSNorm` does (PR 29402 moved the `(1 + weight)` product into fp32).
//! Not burn's `RmsNorm`, which scales by `weight` in the input dtype.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::ops::GemmaBackend;

#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Stored as Hugging Face does: the offset from 1 (zeros = identity scale).
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps,
        }
    }
}

impl<B: GemmaBackend> RmsNorm<B> {
    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let weight = self.weight.val().cast(DType::F32);
        B::rms_norm(x.cast(DType::F32), weight, self.eps).cast(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use burn::tensor::TensorData;

    #[test]
    fn matches_hand_computed_values() {
        let device = cpu_device();
        // x = [1, 2, 3, 4]: mean(x²) = 7.5, rms = sqrt(7.5 + 1e-6)
        let x = Tensor::<Cpu, 2>::from_data([[1.0, 2.0, 3.0, 4.0]], &device);
        let w = Tensor::<Cpu, 1>::from_data([0.0, 1.0, -0.5, 0.25], &device);
        let norm = RmsNorm::new(w, 1e-6);
        let out = norm.forward(x).into_data();
        let rms = (7.5f64 + 1e-6).sqrt();
        let expected = [
            1.0 / rms * 1.0,
            2.0 / rms * 2.0,
            3.0 / rms * 0.5,
            4.0 / rms * 1.25,
        ];
        out.assert_approx_eq::<f32>(
            &TensorData::new(expected.map(|v| v as f32).to_vec(), [1, 4]),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }
}
