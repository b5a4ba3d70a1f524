//! The report `align train|sft|dpo` prints when the stages end: per stage
//! where the model went and its numbers; SFT's first and last loss; DPO's
//! held-out reward accuracy and margin before and after training (the
//! before comes from `eval_on_start`); and a sample answer of the final
//! model to a held-out prompt beside the preferred answer, so a user sees
//! what alignment did. Imports `train` and `generate`.

use std::fmt::Write as _;

use crate::generate::{Generator, SamplingSettings};
use crate::log::LogEntry;
use crate::model::gemma::GemmaBackend;
use crate::train::run::StageResult;
use crate::train::stage::StageOutcome;

/// The report text; the sample answer is generated on `device` of the
/// backend the stages trained on (never a second copy on the CPU).
pub fn report<B: GemmaBackend>(results: &[StageResult], device: &B::Device) -> String {
    let mut text = String::new();
    for result in results {
        match result {
            StageResult::Skipped { output_dir } => {
                let _ = writeln!(text, "{output_dir}: skipped (already finished)");
            }
            StageResult::Ran(outcome) => stage_lines(outcome, &mut text),
        }
    }
    let last_sample = results.iter().rev().find_map(|r| match r {
        StageResult::Ran(outcome) => outcome.sample.as_ref().map(|s| (outcome, s)),
        StageResult::Skipped { .. } => None,
    });
    if let Some((outcome, sample)) = last_sample {
        sample_lines::<B>(outcome, sample, device, &mut text);
    }
    text
}

fn number(entry: &LogEntry, key: &str) -> Option<f64> {
    entry.get(key).and_then(|v| v.as_f64())
}

fn stage_lines(outcome: &StageOutcome, text: &mut String) {
    let summary = &outcome.summary;
    let _ = writeln!(
        text,
        "{}: {} steps, train_loss {:.4}, {:.1}s",
        outcome.output_dir.display(),
        summary.steps,
        summary.train_loss,
        summary.seconds
    );
    let losses: Vec<f64> = outcome
        .history
        .iter()
        .filter_map(|e| number(e, "loss"))
        .collect();
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        let _ = writeln!(text, "  loss: first {first:.4}, last {last:.4}");
    }
    let evals: Vec<&LogEntry> = outcome
        .history
        .iter()
        .filter(|e| e.contains_key("eval_loss"))
        .collect();
    let Some(after) = evals.last() else { return };
    let before = evals
        .first()
        .filter(|e| number(e, "step") == Some(0.0) && evals.len() > 1);
    for key in [
        "eval_loss",
        "eval_rewards/accuracies",
        "eval_rewards/margins",
    ] {
        let Some(value) = number(after, key) else {
            continue;
        };
        match before.and_then(|b| number(b, key)) {
            Some(start) => {
                let _ = writeln!(text, "  {key}: before {start:.4}, after {value:.4}");
            }
            None => {
                let _ = writeln!(text, "  {key}: {value:.4}");
            }
        }
    }
}

/// Greedy answer of the stage's final model to the held-out prompt.
fn sample_lines<B: GemmaBackend>(
    outcome: &StageOutcome,
    sample: &crate::train::stage::SamplePrompt,
    device: &B::Device,
    text: &mut String,
) {
    let generator = match Generator::<B>::load(&outcome.output_dir, device) {
        Ok(generator) => generator,
        Err(error) => {
            let _ = writeln!(text, "sample: not generated ({error:#})");
            return;
        }
    };
    let settings = SamplingSettings {
        max_new_tokens: 64,
        ..Default::default()
    };
    let answer = generator
        .prompt_ids(&sample.prompt)
        .and_then(|ids| generator.generate(&ids, &settings, &mut |_| {}));
    let prompt = sample.prompt.last().map_or("", |m| m.content.as_str());
    let _ = writeln!(text, "sample (held-out prompt, greedy):");
    let _ = writeln!(text, "  prompt:    {prompt}");
    let _ = writeln!(text, "  preferred: {}", sample.chosen.trim());
    match answer {
        Ok(generation) => {
            let _ = writeln!(text, "  model:     {}", generation.text.trim());
        }
        Err(error) => {
            let _ = writeln!(text, "  model:     (failed: {error:#})");
        }
    }
}
