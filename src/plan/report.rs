//! The plan as text for a person (`--format json` prints the same [`Plan`]
//! as one JSON object instead). Sizes are decimal GB (MB below 1 GB), as
//! GPU memory is sold.

use std::fmt::Write;

use super::datasets::DatasetPlan;
use super::{MemoryPlan, Plan, StagePlan};

/// The whole plan, ending with what is missing and the verdict.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let shape = match plan.chained {
        true => format!("chained, {} stages", plan.stages.len()),
        false => "one stage".to_string(),
    };
    let _ = writeln!(out, "plan: {} ({shape})", plan.recipe.display());
    for stage in &plan.stages {
        out.push('\n');
        render_stage(&mut out, stage, plan.stages.len());
    }
    out.push('\n');
    if plan.missing.is_empty() {
        out.push_str("missing: nothing\n");
    } else {
        let _ = writeln!(out, "missing ({}):", plan.missing.len());
        for item in &plan.missing {
            let _ = writeln!(out, "  - {item}");
        }
    }
    let _ = writeln!(out, "verdict: {}", verdict(plan));
    out
}

fn verdict(plan: &Plan) -> String {
    let Some(total) = plan.per_device_memory_bytes else {
        return "unknown: no model config.json to size the model (see missing)".into();
    };
    let largest = format!("largest stage needs {} per device", gb(total));
    match (plan.fits, plan.device_memory_bytes) {
        (Some(true), Some(capacity)) => format!("fits: {largest} of {}", gb(capacity)),
        (Some(false), _) => format!(
            "does not fit: {largest}; see each stage's memory ({})",
            plan.device_memory_bytes.map_or("unknown".into(), gb)
        ),
        _ => format!("unknown device memory; {largest}"),
    }
}

fn render_stage(out: &mut String, stage: &StagePlan, count: usize) {
    let _ = writeln!(
        out,
        "stage {}/{count}: {} ({}), compat {} -> {}",
        stage.index,
        stage.kind,
        stage.source.display(),
        compat_name(stage),
        stage.output_dir
    );
    let d = &stage.devices;
    let memory = d.memory_bytes.map_or("unknown".into(), gb);
    let kind = serde_json::to_value(d.kind).map_or_else(|_| "?".into(), |v| v.to_string());
    let _ = writeln!(
        out,
        "  devices     {} x {}, {memory} each ({})",
        d.count,
        kind.trim_matches('"'),
        d.memory_source
    );
    for note in &d.notes {
        let _ = writeln!(out, "              {note}");
    }
    render_model(out, stage);
    render_data(out, stage);
    render_steps(out, stage);
    match &stage.memory {
        Some(memory) => render_memory(out, memory),
        None => {
            let _ = writeln!(
                out,
                "  memory      unknown: no config.json for the model's shapes"
            );
        }
    }
}

fn compat_name(stage: &StagePlan) -> String {
    serde_json::to_value(stage.compat)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn render_model(out: &mut String, stage: &StagePlan) {
    let m = &stage.model;
    let line = match (&m.config_json, m.parameters) {
        (Some(path), Some(params)) => format!(
            "{}: {} parameters, config.json at {}",
            m.id,
            thousands(params),
            path.display()
        ),
        _ => format!("{}: config.json missing", m.id),
    };
    let _ = writeln!(out, "  model       {line}");
    if let Some(from) = &m.shapes_from {
        let _ = writeln!(out, "              shapes from {from}");
    }
    let _ = writeln!(out, "  weights     {}", m.weights_status);
    let t = &stage.tokenizer;
    let tokenizer = match &t.path {
        Some(path) => format!("{}: {}", t.id, path.display()),
        None => format!("missing: {}", t.missing_text("tokenizer.json")),
    };
    let _ = writeln!(out, "  tokenizer   {tokenizer}");
}

fn render_data(out: &mut String, stage: &StagePlan) {
    let mut label = "  data        ";
    if let Some(problem) = &stage.data.problem {
        let _ = writeln!(out, "{label}{problem}");
        return;
    }
    for dataset in &stage.data.datasets {
        let _ = writeln!(out, "{label}{}", dataset_line(dataset));
        label = "              ";
    }
    if let Some(examples) = stage.train_examples {
        let _ = writeln!(
            out,
            "{label}train examples after preparation: {} ({} dropped)",
            thousands(examples.examples),
            thousands(examples.dropped)
        );
    }
}

fn dataset_line(d: &DatasetPlan) -> String {
    let what = format!("{:<8} {} [{}]", d.role, d.id, d.split);
    match (&d.problem, d.rows, d.kept_rows) {
        (Some(problem), _, _) => format!("{what}: missing: {problem}"),
        (None, Some(rows), Some(kept)) if kept != rows => format!(
            "{what}: {} rows, {} kept (fraction {})",
            thousands(rows),
            thousands(kept),
            d.fraction
        ),
        (None, Some(rows), _) => format!("{what}: {} rows", thousands(rows)),
        (None, None, _) => format!("{what}: rows unknown"),
    }
}

fn render_steps(out: &mut String, stage: &StagePlan) {
    let s = &stage.steps;
    let _ = writeln!(
        out,
        "  batch       effective {} = {} per device x {} accumulation x {} device{}",
        s.effective_batch_size,
        s.per_device_train_batch_size,
        s.gradient_accumulation_steps,
        s.devices,
        if s.devices == 1 { "" } else { "s" }
    );
    let unknown = |v: Option<u64>| v.map_or("?".into(), thousands);
    let from = s.counted_from.as_ref().map_or(String::new(), |c| {
        format!("from {} train {}: ", thousands(c.count), c.unit)
    });
    let _ = writeln!(
        out,
        "  steps       {from}{} micro-batches per device per epoch, {} steps per epoch, {} optimizer steps, {} warmup",
        unknown(s.micro_batches_per_epoch),
        unknown(s.steps_per_epoch),
        unknown(s.total_optimizer_steps),
        unknown(s.warmup_steps)
    );
    if let Some(note) = &s.note {
        let _ = writeln!(out, "              ({note})");
    }
}

fn render_memory(out: &mut String, m: &MemoryPlan) {
    let _ = writeln!(
        out,
        "  memory      per device: {}, optimizer state sharded over {}, gradient checkpointing {}, {} sequences x {} tokens",
        m.dtype.name(),
        m.optimizer_shards,
        if m.gradient_checkpointing {
            "on"
        } else {
            "off"
        },
        m.workload.rows,
        m.workload.seq
    );
    for (label, bytes) in m.parts.rows() {
        let _ = writeln!(out, "                {label:<30} {:>10}", gb(bytes));
    }
    let verdict = match (m.device_memory_bytes, m.fits) {
        (Some(capacity), Some(true)) => format!(
            "of {}: fits ({} free)",
            gb(capacity),
            gb(capacity - m.per_device_memory_bytes)
        ),
        (Some(capacity), _) => format!(
            "of {}: does NOT fit ({} over)",
            gb(capacity),
            gb(m.per_device_memory_bytes.saturating_sub(capacity))
        ),
        (None, _) => "(device memory unknown)".into(),
    };
    let _ = writeln!(
        out,
        "                {:<30} {:>10} {verdict}",
        "total",
        gb(m.per_device_memory_bytes)
    );
    let a = &m.activations;
    let _ = writeln!(
        out,
        "              activations: {} with gradient checkpointing, {} without",
        gb(a.with_checkpointing_bytes),
        gb(a.without_checkpointing_bytes)
    );
    for note in &m.notes {
        let _ = writeln!(out, "              {note}");
    }
}

/// Decimal gigabytes with two decimals, or megabytes below 1 GB (the tiny
/// recipes' sizes).
pub fn gb(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// `8537680896` -> `8,537,680,896`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(8_537_680_896), "8,537,680,896");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(gb(80_000_000_000), "80.00 GB");
        assert_eq!(gb(505_544_704), "505.5 MB");
    }
}
