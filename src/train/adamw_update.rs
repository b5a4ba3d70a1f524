//! One AdamW update of an fp32 parameter, flattened (`train::adamw`): its
//! arithmetic composed from tensor ops, and on burn's CPU backend one
//! multi-threaded pass of `align_kernels::adamw` with the same bits. A
//! backend extension trait, as the model's ops are (`model::gemma::ops`).

use align_kernels::AdamWScalars;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::adamw::Moments;
use crate::backend::flex::{contiguous, f32_slice, float, from_float, output};
use crate::backend::{Composed, Cpu};

/// The new `[value, exp_avg, exp_avg_sq]` of a parameter after one step
/// with gradient `grad`, all flat and of one length.
pub trait AdamWUpdateOp: Backend {
    fn adamw_update(
        value: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        moments: Moments<Self>,
        scalars: AdamWScalars,
    ) -> [Tensor<Self, 1>; 3] {
        composed(value, grad, moments, scalars)
    }
}

impl<B: Composed> AdamWUpdateOp for B {}

impl AdamWUpdateOp for Cpu {
    fn adamw_update(
        value: Tensor<Cpu, 1>,
        grad: Tensor<Cpu, 1>,
        moments: Moments<Cpu>,
        scalars: AdamWScalars,
    ) -> [Tensor<Cpu, 1>; 3] {
        let tensors = [&value, &grad, &moments.exp_avg, &moments.exp_avg_sq];
        if tensors.iter().any(|t| t.dtype() != DType::F32) {
            return composed(value, grad, moments, scalars);
        }
        let [value, grad, exp_avg, exp_avg_sq] =
            [value, grad, moments.exp_avg, moments.exp_avg_sq].map(|t| contiguous(&float(t)));
        let updated = align_kernels::adamw(
            f32_slice(&value),
            f32_slice(&grad),
            f32_slice(&exp_avg),
            f32_slice(&exp_avg_sq),
            scalars,
        );
        updated.map(|values| from_float(output(values, &value)))
    }
}

/// The update composed from tensor ops, every backend's but Flex's. Each
/// scalar is an `f32` (a tensor op rounds its scalar to the tensor's dtype
/// anyway), so that the fused CPU update can repeat the arithmetic bit for
/// bit.
pub fn composed<B: Backend>(
    value: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Moments<B>,
    s: AdamWScalars,
) -> [Tensor<B, 1>; 3] {
    let value = value * s.decay;
    // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    let exp_avg = moments.exp_avg.clone() + (grad.clone() - moments.exp_avg) * s.one_minus_beta1;
    let exp_avg_sq = moments.exp_avg_sq * s.beta2 + grad.clone() * grad * s.one_minus_beta2;
    let denom = exp_avg_sq.clone().sqrt() / s.bias_correction2_sqrt + s.eps;
    let value = value - exp_avg.clone() / denom * s.step_size;
    [value, exp_avg, exp_avg_sq]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu_device;

    /// The CPU backend's fused update (one multi-threaded pass) against the
    /// composed ops it stands for, over many tasks' worth of elements: the
    /// same bits in the value and both moments.
    #[test]
    fn the_fused_cpu_update_is_the_composed_one_bit_for_bit() {
        let device = cpu_device();
        let n = 100_003;
        let tensor = |seed: usize, positive: bool| {
            let values: Vec<f32> = (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 700.0)
                .map(|x| if positive { x * x } else { x })
                .collect();
            Tensor::<Cpu, 1>::from_data(burn::tensor::TensorData::new(values, [n]), &device)
        };
        let scalars = AdamWScalars::for_step(3e-4, 0.01, (0.9, 0.999), 1e-8, 3);
        let (value, grad) = (tensor(1, false), tensor(2, false));
        let moments = Moments {
            exp_avg: tensor(3, false),
            exp_avg_sq: tensor(4, true),
        };
        let fused = Cpu::adamw_update(value.clone(), grad.clone(), moments.clone(), scalars);
        let composed = composed(value, grad, moments, scalars);
        let bits = |t: Tensor<Cpu, 1>| -> Vec<u32> {
            t.into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        for (name, (f, c)) in ["value", "exp_avg", "exp_avg_sq"]
            .iter()
            .zip(fused.into_iter().zip(composed))
        {
            assert!(bits(f) == bits(c), "{name} differs");
        }
    }
}
