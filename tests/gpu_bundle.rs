//! The GPU bundle's runner (`scripts/gpu-bundle/run.sh`) without a GPU and
//! without building the bundle: its CUDA library discovery against a fake
//! pip layout laid out as the cu13 wheels are, and every step's
//! `--cpu-smoke` path with the executables `cargo test` already built.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn run_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-bundle/run.sh")
}

fn touch(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A site-packages folder with the cu13 wheels' layout: NVRTC and the
/// headers under `nvidia/cu13`, NCCL under `nvidia/nccl`, and the NVRTC
/// wheel's metadata naming `nvrtc_version`.
fn fake_site(root: &Path, nvrtc_version: &str, with_nccl: bool) {
    let cu13 = root.join("nvidia/cu13");
    touch(&cu13.join("lib/libnvrtc.so.13"), "");
    for header in [
        "cuda_runtime.h",
        "cuda_bf16.h",
        "mma.h",
        "cccl/cuda/barrier",
    ] {
        touch(&cu13.join("include").join(header), "");
    }
    if with_nccl {
        touch(&root.join("nvidia/nccl/lib/libnccl.so.2"), "");
    }
    let metadata =
        format!("Metadata-Version: 2.1\nName: nvidia-cuda-nvrtc\nVersion: {nvrtc_version}\n");
    touch(
        &root.join(format!(
            "nvidia_cuda_nvrtc-{nvrtc_version}.dist-info/METADATA"
        )),
        &metadata,
    );
}

/// The last line of stdout, parsed.
fn last_json(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn discover(sites: &[&Path], driver: &str, out: &Path) -> Value {
    let python_path = std::env::join_paths(sites).unwrap();
    let output = Command::new("bash")
        .arg(run_sh())
        .arg("--discover")
        .env("OUT", out)
        .env("PYTHONPATH", python_path)
        .env("ALIGN_CUDA_DRIVER_VERSION", driver)
        .env_remove("CUDA_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    last_json(&output.stdout)
}

#[test]
fn discovery_links_the_nvrtc_the_driver_accepts_and_pip_nccl() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, matching) = (dir.path().join("newer"), dir.path().join("matching"));
    fake_site(&newer, "13.2.86", true);
    fake_site(&matching, "13.0.88", false);
    let out = dir.path().join("out");
    let report = discover(&[&newer, &matching], "13.0", &out);

    let nvrtc = matching.join("nvidia/cu13/lib/libnvrtc.so.13");
    let nccl = newer.join("nvidia/nccl/lib/libnccl.so.2");
    assert_eq!(report["nvrtc"], nvrtc.to_str().unwrap(), "{report}");
    assert_eq!(report["nvrtc_version"], "13.0");
    assert_eq!(
        report["cuda_path"],
        matching.join("nvidia/cu13").to_str().unwrap()
    );
    assert_eq!(report["nccl"], nccl.to_str().unwrap());
    // cudarc dlopens these names, never the real sonames.
    let links = out.join("cuda-libs");
    for (name, target) in [
        ("libnvrtc.so", &nvrtc),
        ("libnvrtc.so.13", &nvrtc),
        ("libnccl.so", &nccl),
    ] {
        assert_eq!(
            &std::fs::read_link(links.join(name)).unwrap(),
            target,
            "{name}"
        );
    }
    let env = std::fs::read_to_string(out.join("cuda.env")).unwrap();
    let expected_path = format!(
        "export LD_LIBRARY_PATH={}:{}:{}\n",
        links.display(),
        nvrtc.parent().unwrap().display(),
        nccl.parent().unwrap().display()
    );
    assert!(env.contains(&expected_path), "{env}");
    assert!(env.contains(&format!(
        "export CUDA_PATH={}",
        matching.join("nvidia/cu13").display()
    )));
}

#[test]
fn discovery_says_when_no_nvrtc_is_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    fake_site(&site, "13.2.86", true);
    let report = discover(&[&site], "12.8", &dir.path().join("out"));
    assert_eq!(report["nvrtc_version"], "13.2");
    assert!(
        report["nvrtc_choice"]
            .as_str()
            .unwrap()
            .contains("no NVRTC is known to be no newer")
    );
}

/// The newest `deps/<name>-<hash>` executable beside this test's own.
fn sibling_executable(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let prefix = format!("{name}-");
    let candidates = std::fs::read_dir(&deps).unwrap().filter_map(|entry| {
        let entry = entry.ok()?;
        let file = entry.file_name().into_string().ok()?;
        let hash = file.strip_prefix(&prefix)?;
        let is_hash = hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit());
        let modified = entry.metadata().ok()?.modified().ok()?;
        is_hash.then_some((modified, entry.path()))
    });
    let newest = candidates.max().map(|(_, path)| path);
    newest.unwrap_or_else(|| {
        panic!(
            "no {name} executable in {}: run `cargo test`",
            deps.display()
        )
    })
}

/// A folder holding `align`, `gpu_parity` and `dpo_step` as the bundle's
/// bin/ does, here links to what `cargo test` built.
fn bin_folder(root: &Path, gpu_parity: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let align = PathBuf::from(env!("CARGO_BIN_EXE_align"));
    for (name, target) in [
        ("align", align),
        ("gpu_parity", gpu_parity.into()),
        ("dpo_step", sibling_executable("dpo_step")),
    ] {
        std::os::unix::fs::symlink(target, bin.join(name)).unwrap();
    }
    bin
}

fn cpu_smoke(bin: &Path, out: &Path) -> (bool, Value) {
    let output = Command::new("bash")
        .arg(run_sh())
        .arg("--cpu-smoke")
        .env("OUT", out)
        .env("ALIGN_GPU_CHECK_BIN", bin)
        .env(
            "ALIGN_TEST_FIXTURES",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        )
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), last_json(&output.stdout))
}

#[test]
fn cpu_smoke_runs_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_folder(dir.path(), &sibling_executable("gpu_parity"));
    let (success, report) = cpu_smoke(&bin, &dir.path().join("out"));
    let steps = &report["steps"];
    assert!(success, "{report:#}");
    assert_eq!(report["ok"], true);
    for name in ["device", "parity_fp32", "parity_bf16", "dpo_run", "bench"] {
        assert_eq!(steps[name]["status"], "ok", "{name}: {report:#}");
    }
    assert_eq!(steps["nccl"]["status"], "skipped");
    // The parity steps ran both of their tests: micro-batches and the run.
    for name in ["parity_fp32", "parity_bf16"] {
        assert_eq!(steps[name]["passed"], true);
        assert_eq!(
            steps[name]["largest_share_of_tolerance"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "{name}"
        );
    }
    // Every optimizer step of the fixture recipe was logged, as in TRL's log.
    assert_eq!(steps["dpo_run"]["logged_steps"], trl_logged_steps());
    assert!(
        !steps["dpo_run"]["checkpoints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        steps["dpo_run"]["generated_tokens"], 8,
        "the saved model answered"
    );
    assert_eq!(steps["bench"]["shape"], "tiny");
    assert!(steps["bench"]["tokens_per_second"].as_f64().unwrap() > 0.0);
}

/// How many optimizer steps the fixture's TRL log records.
fn trl_logged_steps() -> usize {
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-gemma/expected/dpo_train_log.jsonl");
    let text = std::fs::read_to_string(log).unwrap();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("loss").is_some() && line.get("eval_loss").is_none())
        .count()
}

#[test]
fn a_failed_device_step_skips_the_rest_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    touch(&broken, "#!/bin/sh\necho no device >&2\nexit 3\n");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = bin_folder(dir.path(), &broken);
    let (success, report) = cpu_smoke(&bin, &dir.path().join("out"));
    assert!(!success);
    assert_eq!(report["ok"], false);
    assert_eq!(report["steps"]["device"]["status"], "failed");
    for name in ["parity_fp32", "parity_bf16", "dpo_run", "bench", "nccl"] {
        assert_eq!(report["steps"][name]["status"], "skipped", "{name}");
    }
}
