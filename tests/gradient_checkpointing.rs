//! `gradient_checkpointing: true` recomputes each decoder layer in the
//! backward (`train::recompute`): the forward runs the layers without a
//! graph and keeps their inputs; the backward rebuilds one layer's graph at
//! a time. Each layer's backward is the plain graph's, fed the same
//! gradient, so the gradients must be bit for bit those without
//! checkpointing: checked on every parameter of the fixture model for one
//! DPO micro-batch (2 pairs), in fp32 and in bf16.

mod common;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::gemma::{EachLayer, LayerRunner};
use align::model::hf::load_gemma;
use align::train::TrainBackend;
use align::train::dpo::{DpoLossKind, DpoLossSpec};
use align::train::objective::Objective;
use align::train::preference::{DpoObjective, PreferenceBatch, Reference};
use align::train::recompute::LayerRecompute;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Device, Tensor};
use common::{fixture, fixture_dpo};

fn micro_batch() -> PreferenceBatch {
    let rows: Vec<_> = fixture_dpo::kept_rows().into_iter().take(2).collect();
    fixture_dpo::preference_batch(&rows)
}

/// Every parameter's gradient (fp32 values, in visiting order) and the loss
/// of one DPO micro-batch: policy `model_b`, reference `model`, in `dtype`.
fn gradients<A: TrainBackend<InnerBackend = Cpu, Device = Device<Cpu>>>(
    dtype: DType,
    checkpointing: bool,
) -> (f64, Vec<Vec<f32>>) {
    let device = cpu_device();
    let reference = load_gemma::<Cpu>(&fixture("tiny-gemma/model"), dtype, &device).unwrap();
    let mut objective = DpoObjective::<A> {
        spec: DpoLossSpec::new(vec![DpoLossKind::Sigmoid], None, 0.05, 0.0).unwrap(),
        reference: Reference::Model(Box::new(reference)),
        device,
    };
    let policy = load_gemma::<A>(&fixture("tiny-gemma/model_b"), dtype, &device).unwrap();
    let (policy, recompute) = match checkpointing {
        true => {
            let (policy, recompute) = LayerRecompute::install(policy);
            (policy, Some(recompute))
        }
        false => (policy, None),
    };
    let layers: &dyn LayerRunner<A> = match &recompute {
        Some(recompute) => recompute.as_ref(),
        None => &EachLayer,
    };
    let (loss, _) = objective.train_loss(&policy, layers, &micro_batch());
    let value = loss
        .clone()
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .unwrap()[0];
    let grads = match recompute {
        Some(recompute) => recompute.backward(&policy, loss.backward()),
        None => GradientsParams::from_grads(loss.backward(), &policy),
    };
    let mut collect = Collect::<A> {
        grads,
        values: Vec::new(),
        _backend: std::marker::PhantomData,
    };
    policy.visit(&mut collect);
    (value, collect.values)
}

struct Collect<A: AutodiffBackend> {
    grads: GradientsParams,
    values: Vec<Vec<f32>>,
    _backend: std::marker::PhantomData<A>,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for Collect<A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let grad = self
            .grads
            .get::<A::InnerBackend, D>(param.id)
            .expect("every parameter has a gradient");
        let data = grad.cast(DType::F32).into_data();
        self.values.push(data.to_vec::<f32>().unwrap());
    }
}

fn assert_identical(dtype: DType) {
    let (loss, plain) = gradients::<CpuTrain>(dtype, false);
    let (loss_checkpointed, checkpointed) = gradients::<CpuTrain>(dtype, true);
    assert_eq!(loss.to_bits(), loss_checkpointed.to_bits(), "loss");
    assert_eq!(plain.len(), checkpointed.len());
    let mut elements = 0;
    for (i, (a, b)) in plain.iter().zip(&checkpointed).enumerate() {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.to_bits(), y.to_bits(), "parameter {i}: {x} vs {y}");
        }
        assert!(a.iter().any(|&x| x != 0.0), "parameter {i} has a gradient");
        elements += a.len();
    }
    println!(
        "{dtype:?}: {} parameters, {elements} gradient values identical",
        plain.len()
    );
}

#[test]
fn checkpointing_leaves_fp32_gradients_bit_for_bit_unchanged() {
    assert_identical(DType::F32);
}

#[test]
fn checkpointing_leaves_bf16_gradients_bit_for_bit_unchanged() {
    assert_identical(DType::BF16);
}
