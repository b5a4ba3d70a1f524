//! DPO optimizer-step benchmark. The default is the bench shape shared with
//! `scripts/oracle/bench_trl.py` (TRL's side): a random Gemma (hidden 256,
//! intermediate 1024, 4 layers, 4 heads, 4 KV heads, head_dim 64, vocabulary
//! of the fixture tokenizer), fp32 on the CPU, 4 pairs per step, every
//! sequence 256 tokens (100 prompt + 156 completion), sigmoid loss, a
//! separate reference model, gradient accumulation 1; 3 warm-up then 10
//! timed optimizer steps.
//!
//! Environment (all optional; the defaults are the bench above):
//! - `ALIGN_BENCH_SHAPE`: `bench`, `tiny` (the fixture model's shape, 2
//!   pairs × 64 tokens: a smoke run) or `gemma-2b` (vocabulary 256000,
//!   hidden 2048, intermediate 16384, 18 layers, 8 heads, 1 KV head,
//!   head_dim 256; 2 pairs × 1024 tokens, 400 of them prompt);
//! - `ALIGN_BENCH_BACKEND`: `cpu` (Flex) or `cuda` (needs `--features cuda`);
//! - `ALIGN_BENCH_DTYPE`: `f32` or `bf16` (mixed precision: bf16 weights and
//!   activations, fp32 master weights, moments and gradient sums);
//! - `ALIGN_BENCH_CHECKPOINTING`: `1` recomputes each decoder layer in the backward (`train::recompute`);
//! - `ALIGN_BENCH_PAIRS`, `ALIGN_BENCH_WARMUP`, `ALIGN_BENCH_STEPS`: override
//!   the pairs per step, warm-up and timed steps;
//! - `ALIGN_BENCH_REPLICAS`: data-parallel replicas on the CPU (default 1),
//!   each a thread with `pairs / replicas` pairs per step, the same global
//!   batch: what `devices: [0, 1]` with `backend: cpu` does in a recipe.
//!   Flex runs most element-wise work on one thread, so two replicas keep
//!   both cores busy (`backend::share_cores_among_replicas` sizes gemm's
//!   rayon pool to the cores per replica, as `align` does);
//! - `ALIGN_BENCH_PEAK_TFLOPS`: the device's dense peak for the MFU figure
//!   (default 989, an H100 SXM in bf16, on CUDA; none on the CPU).
//!
//! Prints one JSON line last: `seconds_per_step_median`, `tokens_per_second`
//! (2 × pairs × seq policy tokens per step), `flops_per_step` and `mfu`
//! (formula in `flops_per_step`'s doc), `peak_rss_bytes` (host), and
//! `estimate_bytes`, the `--dry-run` memory estimate of this shape
//! (`plan::memory`, one device, no ZeRO sharding).
//! Run with `scripts/bench-dpo.sh`, or by the GPU bundle
//! (`scripts/gpu-bundle/run.sh`), which passes `--bench` as cargo does.

use std::time::Instant;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::log::History;
use align::model::gemma::{Gemma, GemmaConfig, RandomInit};
use align::plan::memory::{ComputeDtype, ModelShape, Setup, Workload, estimate};
use align::train::TrainBackend;
use align::train::accounting::StepRules;
use align::train::adamw::AdamWConfig;
use align::train::dpo::{DpoLossKind, DpoLossSpec};
use align::train::logps::ScoredBatch;
use align::train::parallel::launch::run_replicas;
use align::train::parallel::{Cluster, DeviceKind, DeviceList, Replica, exchange_for};
use align::train::preference::{DpoObjective, PreferenceBatch, Reference};
use align::train::recompute::LayerRecompute;
use align::train::schedule::{Schedule, ScheduleKind};
use align::train::trainer::{LoopSettings, Trainer};
use burn::module::AutodiffModule;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use serde_json::{Value, json};

/// A model and batch shape.
#[derive(Clone, Debug)]
struct Shape {
    name: &'static str,
    vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pairs: usize,
    seq: usize,
    prompt: usize,
}

impl Shape {
    fn named(name: &str) -> Shape {
        match name {
            "bench" => Shape {
                name: "bench",
                vocab: 768,
                hidden: 256,
                intermediate: 1024,
                layers: 4,
                heads: 4,
                kv_heads: 4,
                head_dim: 64,
                pairs: 4,
                seq: 256,
                prompt: 100,
            },
            "tiny" => Shape {
                name: "tiny",
                vocab: 768,
                hidden: 64,
                intermediate: 256,
                layers: 2,
                heads: 4,
                kv_heads: 1,
                head_dim: 24,
                pairs: 2,
                seq: 64,
                prompt: 25,
            },
            "gemma-2b" => Shape {
                name: "gemma-2b",
                vocab: 256_000,
                hidden: 2048,
                intermediate: 16_384,
                layers: 18,
                heads: 8,
                kv_heads: 1,
                head_dim: 256,
                pairs: 2,
                seq: 1024,
                prompt: 400,
            },
            other => panic!("ALIGN_BENCH_SHAPE={other}: expected bench, tiny or gemma-2b"),
        }
    }

    fn config(&self) -> GemmaConfig {
        GemmaConfig::from_json(&format!(
            r#"{{"model_type":"gemma","vocab_size":{},"hidden_size":{},"intermediate_size":{},
            "num_hidden_layers":{},"num_attention_heads":{},"num_key_value_heads":{},"head_dim":{},
            "hidden_activation":"gelu_pytorch_tanh","max_position_embeddings":8192,"rms_norm_eps":1e-6,
            "rope_theta":10000.0,"pad_token_id":0,"eos_token_id":1,"bos_token_id":2,"tie_word_embeddings":true}}"#,
            self.vocab,
            self.hidden,
            self.intermediate,
            self.layers,
            self.heads,
            self.kv_heads,
            self.head_dim
        ))
        .expect("bench config")
    }

    /// Model FLOPs of one DPO step (PaLM's accounting, appendix B): with
    /// `N` parameters (the tied embedding counted once, as the LM head
    /// matmul) and `T` tokens, the policy's forward and backward take
    /// `6·N·T` plus `12·L·H·d·S·T` for attention (QKᵀ and PV, the full
    /// `S × S` as eager attention computes it), the reference's forward
    /// `2·N·T + 4·L·H·d·S·T`: `8·N·T + 16·L·H·d·S·T` in all. Work not in it:
    /// norms, softmax, GELU, the optimizer; and the LM head runs only on
    /// scored positions here, so the model FLOPs overstate it.
    fn flops_per_step(&self, parameters: usize) -> f64 {
        let tokens = (2 * self.pairs * self.seq) as f64;
        let attention = (self.layers * self.heads * self.head_dim * self.seq) as f64;
        8.0 * parameters as f64 * tokens + 16.0 * attention * tokens
    }
}

#[derive(Clone, Debug)]
struct Options {
    shape: Shape,
    backend: String,
    dtype: DType,
    checkpointing: bool,
    warmup: usize,
    timed: usize,
    peak_tflops: Option<f64>,
    /// Data-parallel replicas on the CPU, each on its own thread with
    /// `pairs / replicas` pairs per step (`ALIGN_BENCH_REPLICAS`).
    replicas: usize,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn env_number<T: std::str::FromStr>(key: &str) -> Option<T> {
    env(key).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
    })
}

impl Options {
    fn from_env() -> Options {
        let mut shape = Shape::named(&env("ALIGN_BENCH_SHAPE").unwrap_or("bench".into()));
        if let Some(pairs) = env_number("ALIGN_BENCH_PAIRS") {
            shape.pairs = pairs;
        }
        let backend = env("ALIGN_BENCH_BACKEND").unwrap_or("cpu".into());
        let dtype = match env("ALIGN_BENCH_DTYPE").as_deref() {
            None | Some("f32") | Some("fp32") => DType::F32,
            Some("bf16") => DType::BF16,
            Some(other) => panic!("ALIGN_BENCH_DTYPE={other}: expected f32 or bf16"),
        };
        let default_peak = (backend == "cuda").then_some(989.0);
        Options {
            shape,
            dtype,
            checkpointing: env("ALIGN_BENCH_CHECKPOINTING").as_deref() == Some("1"),
            warmup: env_number("ALIGN_BENCH_WARMUP").unwrap_or(3),
            timed: env_number("ALIGN_BENCH_STEPS").unwrap_or(10),
            peak_tflops: env_number("ALIGN_BENCH_PEAK_TFLOPS").or(default_peak),
            replicas: env_number("ALIGN_BENCH_REPLICAS").unwrap_or(1),
            backend,
        }
    }
}

/// Deterministic pseudo-random token ids (xorshift), away from special ids.
fn batch(shape: &Shape, step: usize) -> PreferenceBatch {
    let Shape {
        pairs,
        seq,
        prompt,
        vocab,
        ..
    } = *shape;
    let rows = 2 * pairs;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ step as u64;
    let mut ids = Vec::with_capacity(rows * seq);
    for _ in 0..rows * seq {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.push(7 + (state % (vocab as u64 - 7)) as i64);
    }
    let scored = (0..rows * seq).map(|i| i % seq >= prompt).collect();
    PreferenceBatch {
        pairs,
        sequences: ScoredBatch {
            rows,
            width: seq,
            input_ids: ids,
            attention_mask: vec![1; rows * seq],
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

fn settings(steps: usize, replicas: usize) -> LoopSettings {
    LoopSettings {
        total_steps: 1,
        accumulation: replicas,
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
    }
}

/// Times `warmup + timed` DPO optimizer steps on `A`; returns the
/// wall-clock and CPU seconds of each timed one.
fn time_steps<A: TrainBackend>(
    options: &Options,
    device: A::Device,
    replica: Replica,
) -> (Vec<f64>, Vec<f64>) {
    let replicas = replica.world;
    assert_eq!(
        options.shape.pairs % replicas,
        0,
        "ALIGN_BENCH_REPLICAS={replicas} must divide the {} pairs of a step",
        options.shape.pairs
    );
    let shape = &Shape {
        pairs: options.shape.pairs / replicas,
        ..options.shape.clone()
    };
    let policy = {
        // The seed is the backend's, shared by the replica threads: one
        // initialisation at a time gives every replica the same weights.
        static ONE_INIT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _init = ONE_INIT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        <A as Backend>::seed(&device, 0);
        let mut init = RandomInit::<A> {
            std: 0.02,
            dtype: options.dtype,
            device: device.clone(),
        };
        Gemma::from_source(shape.config(), &mut init).expect("random init")
    };
    let reference: Gemma<A::InnerBackend> = policy.valid();
    let steps = options.warmup + options.timed;
    // One micro-batch per replica per step; each replica runs its own.
    let batches: Vec<Vec<PreferenceBatch>> = (0..steps)
        .map(|i| {
            (0..replicas)
                .map(|r| batch(shape, i * replicas + r))
                .collect()
        })
        .collect();
    let mut objective = DpoObjective::<A> {
        spec: DpoLossSpec::new(vec![DpoLossKind::Sigmoid], None, 0.1, 0.0).expect("spec"),
        reference: Reference::Model(Box::new(reference)),
        device: device.clone(),
    };
    let mut history = History::default();
    let mut trainer = Trainer::new(settings(steps, replicas), &mut objective, &mut history);
    trainer.exchange = exchange_for(&replica);
    let mut model = policy;
    if options.checkpointing {
        let (checkpointed, recompute) = LayerRecompute::install(model);
        (model, trainer.recompute) = (checkpointed, Some(recompute));
    }
    let mut times = Vec::new();
    let mut cpu_seconds = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let started = Instant::now();
        let cpu_started = process_cpu_seconds();
        let epochs = |_: usize| b.clone();
        // `fit` continues from the trainer's state: start each call afresh
        // so that it runs exactly one optimizer step.
        trainer.state = Default::default();
        model = trainer.fit(model, &epochs, &[]).expect("step").0;
        assert_eq!(trainer.state.step, 1, "one optimizer step per timed call");
        // The optimizer's last kernels may still be queued on a GPU.
        <A as Backend>::sync(&device).expect("device sync");
        let seconds = started.elapsed().as_secs_f64();
        let warm = if i < options.warmup { "(warm-up)" } else { "" };
        eprintln!("step {:>2} {warm}: {seconds:.3}s", i + 1);
        if i >= options.warmup {
            times.push(seconds);
            cpu_seconds.push(process_cpu_seconds() - cpu_started);
        }
    }
    (times, cpu_seconds)
}

/// The `--dry-run` estimate of this shape on one device.
fn memory_estimate(options: &Options, config: &GemmaConfig) -> Value {
    let setup = Setup {
        dtype: match options.dtype {
            DType::BF16 => ComputeDtype::Bf16,
            _ => ComputeDtype::Fp32,
        },
        shards: 1,
        accumulation: 1,
        checkpointing: options.checkpointing,
        reference: true,
        runtime_bytes: match options.backend.as_str() {
            "cuda" => align::plan::memory::CUDA_RUNTIME_BYTES,
            _ => 0,
        },
    };
    let work = Workload {
        rows: 2 * options.shape.pairs as u64,
        seq: options.shape.seq as u64,
    };
    let estimated = estimate(&ModelShape::from_config(config), &work, &setup);
    json!({
        "estimate_bytes": estimated.per_device_memory_bytes,
        "estimate_parts": estimated.parts,
    })
}

fn run(options: &Options) -> (Vec<f64>, Vec<f64>) {
    match options.backend.as_str() {
        "cpu" | "flex" if options.replicas > 1 => cpu_replicas(options),
        "cpu" | "flex" => time_steps::<CpuTrain>(options, cpu_device(), Replica::single()),
        "cuda" => cuda(options),
        other => panic!("ALIGN_BENCH_BACKEND={other}: expected cpu or cuda"),
    }
}

/// Replica 0's timings of a data-parallel run over CPU threads.
fn cpu_replicas(options: &Options) -> (Vec<f64>, Vec<f64>) {
    align::backend::share_cores_among_replicas(options.replicas);
    let list = DeviceList {
        kind: DeviceKind::Cpu,
        indices: Some((0..options.replicas).collect()),
    };
    let (devices, names) = list.devices::<Cpu>();
    let cluster = Cluster::local(devices, names);
    let options = options.clone();
    run_replicas::<Cpu, _>(&cluster, move |replica, device| {
        Ok(time_steps::<CpuTrain>(&options, device, replica))
    })
    .expect("replicas")
}

#[cfg(feature = "cuda")]
fn cuda(options: &Options) -> (Vec<f64>, Vec<f64>) {
    time_steps::<align::backend::CudaTrain>(options, Default::default(), Replica::single())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &Options) -> (Vec<f64>, Vec<f64>) {
    panic!("ALIGN_BENCH_BACKEND=cuda: build with --features cuda")
}

fn main() {
    // `cargo test` builds this bench too (`test = true` in Cargo.toml, so
    // the GPU bundle's test finds its executable) and runs it without
    // arguments; `cargo bench` and the bundle pass `--bench`.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("dpo_step: a benchmark; run it with `cargo bench --bench dpo_step`");
        return;
    }
    align::backend::keep_freed_memory();
    let options = Options::from_env();
    let shape = &options.shape;
    let config = shape.config();
    let parameters = config.num_parameters();
    let (mut times, cpu_seconds) = run(&options);
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = match n % 2 {
        0 => (times[n / 2 - 1] + times[n / 2]) / 2.0,
        _ => times[n / 2],
    };
    let tokens = (2 * shape.pairs * shape.seq) as f64;
    let flops = shape.flops_per_step(parameters);
    let achieved_tflops = flops / median / 1e12;
    let mut line = json!({
        "bench": "dpo_step",
        "backend": if options.backend == "cuda" { "cuda" } else { "flex-cpu" },
        "shape": shape.name,
        "dtype": if options.dtype == DType::BF16 { "bf16" } else { "f32" },
        "gradient_checkpointing": options.checkpointing,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "parameters": parameters,
        "pairs": shape.pairs,
        "seq_len": shape.seq,
        "timed_steps": n,
        "seconds_per_step_median": median,
        "seconds_per_step_min": times[0],
        "seconds_per_step_max": times[n - 1],
        "tokens_per_second": tokens / median,
        "flops_per_step": flops,
        "flop_formula": "8*N*T + 16*L*H*d*S*T (policy fwd+bwd 6NT+12LHdST, reference fwd 2NT+4LHdST)",
        "achieved_tflops": achieved_tflops,
        "mfu": options.peak_tflops.map(|peak| achieved_tflops / peak),
        "peak_tflops": options.peak_tflops,
        "process_cpu_seconds_per_step_mean": cpu_seconds.iter().sum::<f64>() / n as f64,
        "peak_rss_bytes": peak_rss_bytes(),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    let object = line.as_object_mut().expect("an object");
    if let Value::Object(estimate) = memory_estimate(&options, &config) {
        object.extend(estimate);
    }
    println!("{line}");
}
