//! Data parallelism on CPU (issue 7): replicas are threads on burn's Flex
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

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::recipe::StageKind;
use align::train::parallel::Cluster;
use align::train::run::{RunError, run_recipe_on};
use align::train::stage::RunOptions;
use common::{fixture, read_jsonl};
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
    let mut set = vec![
        format!("output_dir={}", output.display()),
        "per_device_train_batch_size=1".to_string(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let options = RunOptions {
        quiet: true,
        ..Default::default()
    };
    let config = fixture("tiny-gemma/recipe_dpo.yaml");
    run_recipe_on::<CpuTrain>(&config, &set, Some(StageKind::Dpo), &options, true, cluster)
        .map(|_| ())
}

/// The log without wall-clock fields.
fn log(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("metrics.jsonl"))
        .into_iter()
        .map(|mut entry| {
            let map = entry.as_object_mut().unwrap();
            map.retain(|key, _| !key.contains("runtime") && !key.contains("per_second"));
            entry
        })
        .collect()
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
