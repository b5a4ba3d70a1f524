//! DPO optimizer-step benchmark on the bench shape shared with
//! `../shared/oracle/bench_trl.py`: a random Gemma (hidden 256,
//! intermediate 1024, 4 layers, 4 heads, 4 KV heads, head_dim 64, vocabulary
//! of the fixture tokenizer), fp32, 4 pairs per step, every sequence 256
//! tokens (100 prompt + 156 completion), sigmoid loss, a separate reference
//! model, gradient accumulation 1; 3 warm-up then 10 timed optimizer steps.
//!
//! Prints one JSON line last: `seconds_per_step_median`, `tokens_per_second`
//! (2 × batch × 256 policy tokens per step), `peak_rss_bytes`.
//! Run with `scripts/bench-dpo.sh` (release build).

use std::time::Instant;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::log::History;
use align::model::gemma::{Gemma, GemmaConfig, RandomInit};
use align::train::accounting::StepRules;
use align::train::adamw::AdamWConfig;
use align::train::dpo::{DpoLossKind, DpoLossSpec, DpoLossState};
use align::train::logps::ScoredBatch;
use align::train::preference::{DpoObjective, PreferenceBatch, Reference};
use align::train::schedule::{Schedule, ScheduleKind};
use align::train::trainer::{LoopSettings, Trainer};
use burn::module::AutodiffModule;
use burn::tensor::DType;
use burn::tensor::backend::Backend;

const PAIRS: usize = 4;
const SEQ: usize = 256;
const PROMPT: usize = 100;
const WARMUP: usize = 3;
const TIMED: usize = 10;
const VOCAB: usize = 768;

fn config() -> GemmaConfig {
    GemmaConfig::from_json(&format!(
        r#"{{"model_type":"gemma","vocab_size":{VOCAB},"hidden_size":256,"intermediate_size":1024,
        "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":4,"head_dim":64,
        "hidden_activation":"gelu_pytorch_tanh","max_position_embeddings":1024,"rms_norm_eps":1e-6,
        "rope_theta":10000.0,"pad_token_id":0,"eos_token_id":1,"bos_token_id":2,"tie_word_embeddings":true}}"#
    ))
    .expect("bench config")
}

/// Deterministic pseudo-random token ids (xorshift), away from special ids.
fn batch(step: usize) -> PreferenceBatch {
    let rows = 2 * PAIRS;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ step as u64;
    let mut ids = Vec::with_capacity(rows * SEQ);
    for _ in 0..rows * SEQ {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.push(7 + (state % (VOCAB as u64 - 7)) as i64);
    }
    let scored = (0..rows * SEQ).map(|i| i % SEQ >= PROMPT).collect();
    PreferenceBatch {
        pairs: PAIRS,
        sequences: ScoredBatch {
            rows,
            width: SEQ,
            input_ids: ids,
            attention_mask: vec![1; rows * SEQ],
            scored,
            positions: None,
        },
        reference_logps: None,
    }
}

/// CPU seconds used by this process so far, all threads (`utime + stime` of
/// `/proc/self/stat`, in the kernel's fixed 100 Hz `USER_HZ` ticks): less
/// sensitive than wall time to other load on the machine, and the same
/// measure as `bench_trl.py`'s `process_cpu_seconds_per_step_mean`.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let device = cpu_device();
    <CpuTrain as Backend>::seed(&device, 0);
    let mut init = RandomInit::<CpuTrain> {
        std: 0.02,
        dtype: DType::F32,
        device,
    };
    let policy = Gemma::from_source(config(), &mut init).expect("random init");
    let reference: Gemma<Cpu> = policy.valid();
    let steps = WARMUP + TIMED;
    let batches: Vec<PreferenceBatch> = (0..steps).map(batch).collect();
    let mut objective = DpoObjective::<CpuTrain> {
        spec: DpoLossSpec::new(vec![DpoLossKind::Sigmoid], None, 0.1, 0.0).expect("spec"),
        reference: Reference::Model(Box::new(reference)),
        state: DpoLossState::default(),
        device,
    };
    let settings = LoopSettings {
        total_steps: 1,
        accumulation: 1,
        schedule: Schedule {
            kind: ScheduleKind::Constant,
            peak_lr: 1e-5,
            warmup_steps: 0,
            total_steps: steps,
        },
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        logging_steps: 1,
        logging_first_step: false,
        rules: StepRules::Transformers5,
        eval_every: None,
        eval_each_epoch: false,
        eval_at_end: false,
    };
    let mut history = History::default();
    let mut trainer = Trainer::new(settings, &mut objective, &mut history);
    let mut model = policy;
    let mut times = Vec::new();
    let mut cpu_seconds = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let started = Instant::now();
        let cpu_started = process_cpu_seconds();
        let one = vec![b.clone()];
        let epochs = |_: usize| one.clone();
        // `fit` continues from the trainer's state: start each call afresh
        // so that it runs exactly one optimizer step.
        trainer.state = Default::default();
        model = trainer.fit(model, &epochs, &[]).expect("step").0;
        assert_eq!(trainer.state.step, 1, "one optimizer step per timed call");
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "step {:>2} {}: {seconds:.3}s",
            i + 1,
            if i < WARMUP { "(warm-up)" } else { "" }
        );
        if i >= WARMUP {
            times.push(seconds);
            cpu_seconds.push(process_cpu_seconds() - cpu_started);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = (times[TIMED / 2 - 1] + times[TIMED / 2]) / 2.0;
    let tokens = (2 * PAIRS * SEQ) as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "dpo_step",
            "backend": "flex-cpu",
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "pairs": PAIRS,
            "seq_len": SEQ,
            "timed_steps": TIMED,
            "seconds_per_step_median": median,
            "seconds_per_step_min": times[0],
            "seconds_per_step_max": times[TIMED - 1],
            "tokens_per_second": tokens / median,
            "process_cpu_seconds_per_step_mean": cpu_seconds.iter().sum::<f64>() / TIMED as f64,
            "peak_rss_bytes": peak_rss_bytes(),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        })
    );
}
