//! Data parallelism on CPU: replicas are threads on burn's Flex
//! device, every exchange goes through burn-collective.
//!
//! - 2 devices x batch 1 x accumulation 2 equals 1 device x batch 1 x
//!   accumulation 4 on the fixture's DPO run (same micro-batches per step):
//!   every logged value and the final weights to 1e-5.
//! - 3 devices on 32 pairs (not a multiple of 3): the same as 1 device x
//!   accumulation 3, so each pair is used once per epoch and the short last
//!   step (2 micro-batches: rank 2 has none) counts as on one device.
//! - A replica that panics mid-step stops the run with an error naming its
//!   device and the step, within a bounded time.
//! - ZeRO-1 (`shard_optimizer_state`, on by default with several devices)
//!   against the unsharded optimizer on the same devices: the same bits in
//!   every logged value, weight and checkpointed optimizer tensor, fp32 and
//!   bf16; a sharded run interrupted and resumed equals the uninterrupted one.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::gemma::Gemma;
use align::model::hf::{load_gemma, parameter_ids};
use align::recipe::StageKind;
use align::train::adamw::{AdamW, AdamWConfig};
use align::train::grad_norm::{clip_global_norm, clip_to_norm};
use align::train::parallel::launch::run_replicas;
use align::train::parallel::{Cluster, OptimizerShards};
use align::train::resume::ResumeFrom;
use align::train::run::{RunError, run_recipe_on};
use align::train::stage::RunOptions;
use align::train::stage::StageError;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor, TensorData};
use common::{fixture, log_without_clock as log};
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

fn cluster(devices: usize) -> Cluster<burn::tensor::Device<Cpu>> {
    let names = (0..devices).map(|i| format!("cpu:{i}")).collect();
    Cluster::local(vec![cpu_device(); devices], names)
}

/// The fixture's DPO stage with batch 1 into `output`, on `cluster`.
fn run(
    output: &Path,
    extra: &[&str],
    cluster: &Cluster<burn::tensor::Device<Cpu>>,
) -> Result<(), RunError> {
    run_with(output, extra, cluster, RunOptions::default())
}

fn run_with(
    output: &Path,
    extra: &[&str],
    cluster: &Cluster<burn::tensor::Device<Cpu>>,
    options: RunOptions,
) -> Result<(), RunError> {
    let mut set = vec![
        format!("output_dir={}", output.display()),
        "per_device_train_batch_size=1".to_string(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let options = RunOptions {
        quiet: true,
        ..options
    };
    let config = fixture("tiny-gemma/recipe_dpo.yaml");
    run_recipe_on::<CpuTrain>(&config, &set, Some(StageKind::Dpo), &options, true, cluster)
        .map(|_| ())
}

/// Largest difference between two logs with the same lines and keys.
fn log_difference(got: &[Value], want: &[Value]) -> f64 {
    assert_eq!(got.len(), want.len(), "log lines");
    let mut worst: f64 = 0.0;
    for (line, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(g), keys(w), "keys of line {line}");
        for (key, value) in w {
            let (a, b) = (g[key].as_f64().unwrap(), value.as_f64().unwrap());
            let difference = (a - b).abs() / b.abs().max(1.0);
            assert!(difference <= TOLERANCE, "line {line} `{key}`: {a} vs {b}");
            worst = worst.max(difference);
        }
    }
    worst
}

/// Largest absolute difference between the saved weights of two runs.
fn weight_difference(got: &Path, want: &Path) -> f64 {
    let read = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    let (got, want) = (read(got), read(want));
    let got = safetensors::SafeTensors::deserialize(&got).unwrap();
    let want = safetensors::SafeTensors::deserialize(&want).unwrap();
    assert_eq!(got.len(), want.len());
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let mut worst: f64 = 0.0;
    for (name, tensor) in want.tensors() {
        let other = got.tensor(&name).unwrap();
        assert_eq!(other.shape(), tensor.shape(), "{name}");
        for (a, b) in floats(other.data()).iter().zip(floats(tensor.data())) {
            worst = worst.max((a - b).abs() as f64);
        }
    }
    assert!(worst <= TOLERANCE, "weights differ by {worst}");
    worst
}

/// Runs `work` on a thread and fails the test if it takes over `limit`.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no result within {limit:?}: a replica hangs"))
}

#[test]
fn two_devices_equal_one_device_with_twice_the_accumulation() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    run(one.path(), &["gradient_accumulation_steps=4"], &cluster(1)).unwrap();
    run(two.path(), &["gradient_accumulation_steps=2"], &cluster(2)).unwrap();
    let (want, got) = (log(one.path()), log(two.path()));
    // 32 pairs (TRL drops 2 of the 34), 4 per step: 8 steps per epoch, 2
    // epochs, a summary, an eval.
    assert_eq!(want.len(), 18);
    let logs = log_difference(&got, &want);
    let weights = weight_difference(two.path(), one.path());
    eprintln!("2 devices x GA 2 vs 1 x GA 4: log {logs:e} (rel), weights {weights:e} (abs)");
}

#[test]
fn three_devices_use_every_pair_once_with_a_short_last_step() {
    let one = tempfile::tempdir().unwrap();
    let three = tempfile::tempdir().unwrap();
    let common = ["num_train_epochs=1", "eval_strategy=epoch"];
    let one_ga = [common[0], common[1], "gradient_accumulation_steps=3"];
    let three_ga = [common[0], common[1], "gradient_accumulation_steps=1"];
    run(one.path(), &one_ga, &cluster(1)).unwrap();
    run(three.path(), &three_ga, &cluster(3)).unwrap();
    let (want, got) = (log(one.path()), log(three.path()));
    // 32 pairs, 3 per step: 11 steps, the last with two pairs (ranks 0 and
    // 1; rank 2 has none); an eval at the epoch's end (2 batches of 4: rank
    // 2 has none either), the summary, the final eval.
    assert_eq!(want.len(), 14);
    assert_eq!(want[10]["step"], 11);
    assert_eq!(want[10]["epoch"], 1.0);
    let logs = log_difference(&got, &want);
    let weights = weight_difference(three.path(), one.path());
    eprintln!("3 devices x GA 1 vs 1 x GA 3: log {logs:e} (rel), weights {weights:e} (abs)");
}

#[test]
fn a_device_failing_mid_step_stops_the_run_naming_it() {
    let error = within(Duration::from_secs(600), || {
        let out = tempfile::tempdir().unwrap();
        let mut cluster = cluster(2);
        cluster.fail = Some((1, 3));
        cluster.stop_grace = Duration::from_secs(30);
        run(
            out.path(),
            &["gradient_accumulation_steps=2", "max_steps=5"],
            &cluster,
        )
        .unwrap_err()
        .to_string()
    });
    assert!(
        error.contains("device cpu:1 failed in training step 3")
            && error.contains("injected failure"),
        "{error}"
    );
}

/// Every tensor of a safetensors file, by name: dtype, shape and bytes.
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = format!("{:?}", view.dtype());
            (name, dtype, view.shape().to_vec(), view.data().to_vec())
        })
        .collect();
    all.sort();
    all
}

/// Runs with and without the sharded optimizer agree bit for bit.
fn assert_same_bits(sharded: &Path, unsharded: &Path, checkpoints: &[usize]) {
    assert_eq!(log(sharded), log(unsharded), "logged values");
    let weights = |dir: &Path| tensors(&dir.join("model.safetensors"));
    assert!(weights(sharded) == weights(unsharded), "final weights");
    for step in checkpoints {
        let dir = format!("checkpoint-{step}");
        let optimizer = |root: &Path| tensors(&root.join(&dir).join("optimizer.safetensors"));
        let (got, want) = (optimizer(sharded), optimizer(unsharded));
        let names = |all: &[(String, String, Vec<usize>, Vec<u8>)]| {
            all.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&got), names(&want), "{dir}: optimizer tensors");
        assert!(got == want, "{dir}: optimizer state differs");
    }
}

#[test]
fn the_sharded_optimizer_updates_bit_for_bit_as_the_unsharded_one() {
    for precision in ["bf16=false", "bf16=true"] {
        let sharded = tempfile::tempdir().unwrap();
        let unsharded = tempfile::tempdir().unwrap();
        // 2 devices x 1 micro-batch: the reduce onto the owner adds the
        // same two gradients as the all-reduce.
        let common = [
            precision,
            "gradient_accumulation_steps=1",
            "max_steps=5",
            "save_strategy=steps",
            "save_steps=2",
        ];
        let with = |flag: &'static str| [&common[..], &[flag]].concat();
        run(
            sharded.path(),
            &with("shard_optimizer_state=true"),
            &cluster(2),
        )
        .unwrap();
        run(
            unsharded.path(),
            &with("shard_optimizer_state=false"),
            &cluster(2),
        )
        .unwrap();
        assert_same_bits(sharded.path(), unsharded.path(), &[2, 4]);
        let masters = tensors(&sharded.path().join("checkpoint-4/optimizer.safetensors"))
            .iter()
            .filter(|t| t.0.ends_with(".master"))
            .count();
        // bf16: every parameter has its fp32 master in the gathered state.
        let expected = if precision == "bf16=true" { 20 } else { 0 };
        assert_eq!(masters, expected, "{precision}: master weights");
    }
}

#[test]
fn a_sharded_run_interrupted_and_resumed_equals_the_uninterrupted_run() {
    let whole = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    let settings = [
        "gradient_accumulation_steps=1",
        "max_steps=6",
        "save_strategy=steps",
        "save_steps=4",
    ];
    run(whole.path(), &settings, &cluster(2)).unwrap();
    let stopped = RunOptions {
        stop_after_step: Some(3),
        ..Default::default()
    };
    let error = run_with(broken.path(), &settings, &cluster(2), stopped)
        .unwrap_err()
        .to_string();
    assert!(error.contains("interrupted after step 3"), "{error}");
    let resumed = RunOptions {
        resume: Some(ResumeFrom::Latest),
        ..Default::default()
    };
    run_with(broken.path(), &settings, &cluster(2), resumed).unwrap();
    assert_same_bits(broken.path(), whole.path(), &[4]);
}

/// Synthetic gradients (fp32) for the parameters of `model` that `keep`
/// accepts: the same on every replica, different each step, large enough
/// that clipping acts.
fn synthetic_grads(
    model: &Gemma<CpuTrain>,
    step: usize,
    keep: &dyn Fn(ParamId) -> bool,
) -> GradientsParams {
    struct Make<'a>(GradientsParams, usize, usize, &'a dyn Fn(ParamId) -> bool);
    impl ModuleVisitor<CpuTrain> for Make<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTrain, D>>) {
            self.2 += 1;
            if !(self.3)(param.id) {
                return;
            }
            let shape = param.shape();
            let (step, salt) = (self.1 as f32, self.2 as f32);
            let values: Vec<f32> = (0..shape.num_elements())
                .map(|i| (i as f32 * 0.37 + step * 1.3 + salt).sin() * 0.05)
                .collect();
            let device = param.val().device();
            let grad: Tensor<Cpu, D> =
                Tensor::from_data(TensorData::new(values, shape.clone()), &device);
            self.0.register(param.id, grad);
        }
    }
    let mut make = Make(GradientsParams::new(), step, 0, keep);
    model.visit(&mut make);
    make.0
}

/// Each parameter's bytes, in visiting order.
fn parameter_bytes(model: &Gemma<CpuTrain>) -> Vec<Vec<u8>> {
    struct Bytes(Vec<Vec<u8>>);
    impl ModuleVisitor<CpuTrain> for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTrain, D>>) {
            self.0.push(param.val().into_data().bytes.to_vec());
        }
    }
    let mut bytes = Bytes(Vec::new());
    model.visit(&mut bytes);
    bytes.0
}

/// The optimizer alone on 3 replicas (whose summed gradients the
/// collective adds in an order that varies from run to run with 3 peers,
/// so the whole-run comparison above uses 2): given the same gradients,
/// 5 sharded steps (norm from the owners' squares, clipping, AdamW on the
/// owned parameters, broadcast) equal 5 steps of one unsharded AdamW bit
/// for bit on every replica, fp32 and bf16 (through fp32 masters), and
/// each replica keeps only its share of the state.
#[test]
fn three_sharded_replicas_update_bit_for_bit_as_one_unsharded_adamw() {
    for dtype in [DType::F32, DType::BF16] {
        run_replicas::<Cpu, _>(&cluster(3), move |replica, device| {
            let model = load_gemma::<CpuTrain>(&fixture("tiny-gemma/model"), dtype, &device)
                .map_err(|e| StageError::Parallel(e.to_string()))?;
            let shards = OptimizerShards::partition(&model, replica.rank, replica.world);
            let config = AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            };
            let (mut plain, mut sharded) = (AdamW::<Cpu>::new(config), AdamW::<Cpu>::new(config));
            let (mut plain_model, mut sharded_model) = (model.clone(), model);
            for step in 1..=5 {
                let lr = 1e-3 * step as f64;
                let (grads, plain_norm) =
                    clip_global_norm(&plain_model, synthetic_grads(&plain_model, step, &|_| true), 1.0);
                plain_model = plain.step(lr, plain_model, grads);
                let owned = synthetic_grads(&sharded_model, step, &|id| shards.owns(id));
                let all = parameter_ids(&sharded_model);
                let norm = shards.global_norm(&replica, &device, &sharded_model, &owned, step)?;
                let grads = clip_to_norm(&sharded_model, owned, 1.0, norm);
                sharded_model = sharded.step(lr, sharded_model, grads);
                sharded_model = shards.broadcast_parameters(&replica, sharded_model, step)?;
                let rank = replica.rank;
                if norm.to_bits() != plain_norm.to_bits() {
                    return Err(StageError::Parallel(format!("rank {rank} step {step}: norm {norm} vs {plain_norm}")));
                }
                if parameter_bytes(&sharded_model) != parameter_bytes(&plain_model) {
                    return Err(StageError::Parallel(format!("rank {rank} step {step}: weights differ")));
                }
                let kept = all.iter().filter(|(_, id)| sharded.moments.contains_key(id)).count();
                let owned = all.iter().filter(|(_, id)| shards.owns(*id)).count();
                let masters = sharded.masters.len();
                let expected_masters = if dtype == DType::BF16 { owned } else { 0 };
                if kept != owned || sharded.moments.len() != owned || masters != expected_masters {
                    return Err(StageError::Parallel(format!(
                        "rank {rank}: state of {kept} parameters ({masters} masters), owns {owned} of {}",
                        all.len()
                    )));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
    }
}

/// The recipe's `devices`/`backend` keys start the replicas as `--devices`
/// does: 2 CPU devices double the effective batch, so the fixture's epoch
/// (32 pairs, batch 2, accumulation 2) takes 4 steps instead of 8.
#[test]
fn the_recipe_devices_key_runs_the_replicas() {
    let out = tempfile::tempdir().unwrap();
    let output_dir = format!("output_dir={}", out.path().display());
    let recipe = fixture("tiny-gemma/recipe_dpo.yaml");
    let ran = std::process::Command::new(env!("CARGO_BIN_EXE_align"))
        .arg("dpo")
        .arg(&recipe)
        .args([
            "--quiet",
            "--set",
            &output_dir,
            "--set",
            "num_train_epochs=1",
        ])
        .args(["--set", "backend=cpu", "--set", "devices=[0,1]"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}");
    let steps: Vec<u64> = log(out.path())
        .iter()
        .filter(|entry| entry.get("loss").is_some())
        .map(|entry| entry["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "{stderr}");
}
