//! Each objective's part of a stage: its data prepared and collated, its
//! models (DPO's frozen reference, scored once when precomputed) and the
//! objective of the stage's rules, then the loop.

use super::SamplePrompt;
use super::data::{StageData, preference_batch, sample_prompt, sft_batch};
use super::error::StageError;
use super::fit::{FitPlace, Fitted, fit};
use super::models::{precompute_reference, reference_model};
use super::rules::{DpoRules, SftRules};
use crate::data::{DpoBatch, DpoExample, Preprocessor, SftBatch, SftExample};
use crate::data::{prepare_dpo, prepare_sft};
use crate::model::gemma::{ActivationRule, Gemma};
use crate::recipe::SplitRole;
use crate::train::TrainBackend;
use crate::train::preference::{DpoObjective, Reference};
use crate::train::sft::SftObjective;
use crate::train::trl07::preference::Trl07DpoObjective;
use crate::train::trl07::sft::Trl07SftObjective;

/// A DPO stage: pairs prepared by the stage's rules, the reference model
/// (or its precomputed log-probs), the loss of `objective`, the loop.
/// Returns the first eval pair as the end-of-run sample prompt too.
pub(super) fn fit_dpo<A: TrainBackend>(
    place: &FitPlace<'_, A>,
    pre: &Preprocessor,
    rules: DpoRules,
    activation: ActivationRule,
    policy: Gemma<A>,
) -> Result<(Fitted<A>, Option<SamplePrompt>), StageError> {
    let (stage, device) = (place.stage, place.device);
    let train = prepare_dpo(stage, pre, SplitRole::Train)?.examples();
    let eval = match place.with_eval() {
        true => prepare_dpo(stage, pre, SplitRole::Test)?.examples(),
        false => Vec::new(),
    };
    let sample = eval.first().and_then(sample_prompt);
    let collate = |examples: &[DpoExample], indices: &[usize]| {
        let picked: Vec<&DpoExample> = indices.iter().map(|&i| &examples[i]).collect();
        let (pad, max_length, truncation) = (pre.pad_token_id, pre.max_length, pre.truncation);
        preference_batch(&DpoBatch::collate(
            &picked, indices, pad, max_length, truncation,
        ))
    };
    let reference = reference_model::<A>(stage, activation, &policy, device)?;
    let (reference, tables) = if stage.dpo.precompute_ref_log_probs {
        let train_scored = |i: &[usize]| collate(&train, i);
        let eval_scored = |i: &[usize]| collate(&eval, i);
        let tables = precompute_reference(
            stage,
            place.options,
            &reference,
            [(&train[..], &train_scored), (&eval[..], &eval_scored)],
            place.output_dir,
            device,
        )?;
        // Freed before training: the point of precomputing.
        drop(reference);
        (Reference::Precomputed, Some(tables))
    } else {
        (Reference::Model(Box::new(reference)), None)
    };
    let attach = |split: usize| {
        let tables = tables.as_ref();
        let examples = [&train, &eval][split];
        move |_: &[&DpoExample], indices: &[usize]| {
            let mut batch = collate(examples, indices);
            batch.reference_logps = tables.map(|t| t[split].for_pairs(indices));
            batch
        }
    };
    let (train_collate, eval_collate) = (attach(0), attach(1));
    let data = StageData::new(stage, &train, &eval, &train_collate, &eval_collate);
    let device = device.clone();
    let fitted = match rules {
        DpoRules::Trl1(spec) => {
            let mut objective = DpoObjective {
                spec,
                reference,
                device,
            };
            fit(place, &mut objective, policy, &data)?
        }
        DpoRules::Trl07(loss) => {
            let mut objective = Trl07DpoObjective {
                reference,
                device,
                loss,
                // transformers 4.38 divides by GA and DDP averages over devices.
                accumulation: place.accumulation(),
            };
            fit(place, &mut objective, policy, &data)?
        }
    };
    Ok((fitted, sample))
}

/// An SFT stage: conversations (or packed sequences) prepared by the
/// stage's rules, the objective of its stack, the loop.
pub(super) fn fit_sft<A: TrainBackend>(
    place: &FitPlace<'_, A>,
    pre: &Preprocessor,
    rules: SftRules,
    policy: Gemma<A>,
) -> Result<Fitted<A>, StageError> {
    let stage = place.stage;
    let train = prepare_sft(stage, pre, SplitRole::Train)?.examples();
    let eval = match place.with_eval() {
        true => prepare_sft(stage, pre, SplitRole::Test)?.examples(),
        false => Vec::new(),
    };
    let collate = |picked: &[&SftExample], indices: &[usize]| {
        sft_batch(&SftBatch::collate(picked, indices, pre.pad_token_id))
    };
    let data = StageData::new(stage, &train, &eval, &collate, &collate);
    let device = place.device.clone();
    match rules {
        SftRules::Trl1 => fit(place, &mut SftObjective::<A> { device }, policy, &data),
        SftRules::Trl07 => {
            let mut objective = Trl07SftObjective::<A> {
                device,
                accumulation: place.accumulation(),
            };
            fit(place, &mut objective, policy, &data)
        }
    }
}
