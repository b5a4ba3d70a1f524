//! A stage's models: the policy (loaded, or initialised from scratch), the
//! frozen reference, and the reference's log-probs scored once when
//! `precompute_ref_log_probs` asks.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use super::RunOptions;
use super::error::{StageError, io_error};
use crate::data::{RepoKind, resolve};
use crate::model::gemma::{ActivationRule, Gemma, GemmaConfig, RandomInit};
use crate::model::hf::{HfError, load_gemma_with_rule};
use crate::recipe::StageConfig;
use crate::train::LogpsBackend;
use crate::train::precision::compute_dtype;
use crate::train::preference::PreferenceBatch;
use crate::train::reference::{
    PrecomputeSettings, ReferenceLogps, precompute, weights_fingerprint,
};

/// The policy: the checkpoint at `model_name_or_path`, or (with
/// `init_from_scratch`) transformers' random initialisation of its config.
pub(super) fn load_policy<A: AutodiffBackend>(
    stage: &StageConfig,
    rule: ActivationRule,
    device: &A::Device,
) -> Result<Gemma<A>, StageError> {
    let dir = resolve(&stage.model.model_name_or_path, RepoKind::Model)?;
    let dtype = compute_dtype(stage);
    if !stage.model.init_from_scratch {
        return Ok(load_gemma_with_rule::<A>(&dir, dtype, rule, device)?);
    }
    let config =
        GemmaConfig::from_file_with_rule(&dir.join("config.json"), rule).map_err(HfError::from)?;
    let std = config
        .raw
        .get("initializer_range")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.02);
    // The backend's generator is global: replicas initialising at once
    // would interleave their draws. One at a time, each draws the weights
    // of a single-device run.
    static ONE_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_init = ONE_INIT.lock().unwrap_or_else(|p| p.into_inner());
    A::seed(device, stage.training.seed);
    let mut init = RandomInit::<A> {
        std,
        dtype,
        device: device.clone(),
    };
    let Ok(model) = Gemma::from_source(config, &mut init);
    Ok(model)
}

/// The frozen reference: `ref_model` when given, else a copy of the
/// initial policy, on the inner backend (no graph, no gradients) and in the
/// compute dtype: bf16 weights under `bf16: true`, so it holds `2·P` bytes,
/// the `reference model` line of the `--dry-run` plan. `policy.valid()`
/// shares the initial weights' buffers, which the optimizer's first step
/// stops sharing. With `precompute_ref_log_probs` it is dropped after the
/// scoring pass, before training starts.
pub(super) fn reference_model<A: AutodiffBackend>(
    stage: &StageConfig,
    rule: ActivationRule,
    policy: &Gemma<A>,
    device: &A::Device,
) -> Result<Gemma<A::InnerBackend>, StageError> {
    Ok(match &stage.model.ref_model {
        Some(path) => {
            let dir = resolve(path, RepoKind::Model)?;
            load_gemma_with_rule::<A::InnerBackend>(&dir, compute_dtype(stage), rule, device)?
        }
        None => policy.valid(),
    })
}

/// A split's examples and how to collate the ones at some indices.
pub(super) type ScoredSplit<'a, E> = (&'a [E], &'a dyn Fn(&[usize]) -> PreferenceBatch);

/// Scores the train and eval splits with the reference once (or reads them
/// from `output_dir/ref_logps/`), as TRL's `precompute_ref_log_probs`: batch
/// size `precompute_ref_batch_size`, else the per-device train/eval size.
pub(super) fn precompute_reference<B: LogpsBackend, E>(
    stage: &StageConfig,
    options: &RunOptions,
    reference: &Gemma<B>,
    splits: [ScoredSplit<'_, E>; 2],
    output_dir: &Path,
    device: &B::Device,
) -> Result<[ReferenceLogps; 2], StageError> {
    let t = &stage.training;
    let weights = weights_fingerprint(reference);
    let cache_dir = output_dir.join("ref_logps");
    let sizes = [t.per_device_train_batch_size, t.per_device_eval_batch_size];
    let names = ["train", "eval"];
    let mut tables = Vec::with_capacity(2);
    for ((examples, collate), (split, default_size)) in
        splits.into_iter().zip(names.into_iter().zip(sizes))
    {
        let settings = PrecomputeSettings {
            cache_dir: &cache_dir,
            split,
            batch_size: stage.dpo.precompute_ref_batch_size.unwrap_or(default_size),
            quiet: options.quiet,
        };
        let table = precompute(
            reference,
            weights,
            examples.len(),
            collate,
            &settings,
            device,
        )
        .map_err(io_error(&cache_dir))?;
        tables.push(table);
    }
    Ok(tables.try_into().expect("two splits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain, cpu_device};
    use crate::recipe::{Recipe, StageKind};
    use crate::train::compat::CompatRules;
    use burn::tensor::DType;

    fn fixture_stage(overrides: &[&str]) -> StageConfig {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma/recipe_dpo.yaml");
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let recipe = Recipe::load_as(&path, &overrides, Some(StageKind::Dpo)).unwrap();
        recipe.stages.into_iter().next().unwrap()
    }

    /// The reference is a `Gemma<Cpu>` (the inner backend: no autodiff, so
    /// no graph and no gradients, by type) holding bf16 weights under
    /// `bf16: true`, fp32 otherwise; with `ref_model` too.
    #[test]
    fn the_reference_is_held_in_the_compute_dtype_without_autodiff() {
        let device = cpu_device();
        for (overrides, dtype) in [
            (vec!["bf16=true"], DType::BF16),
            (vec!["bf16=true", "ref_model=model_b"], DType::BF16),
            (vec![], DType::F32),
        ] {
            let stage = fixture_stage(&overrides);
            let rule = CompatRules::for_compat(stage.ext.compat).activation;
            let policy = load_policy::<CpuTrain>(&stage, rule, &device).unwrap();
            assert_eq!(policy.dtype(), dtype, "{overrides:?}");
            let reference: Gemma<Cpu> = reference_model(&stage, rule, &policy, &device).unwrap();
            assert_eq!(reference.dtype(), dtype, "{overrides:?}");
        }
    }
}
