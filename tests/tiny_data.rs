//! The default run's data is what its generator makes: `scripts/make_tiny_data.py`
//! run into a temporary folder rebuilds every file of `data/tiny/` byte for
//! byte (and, with `--check`, once more into another folder, the same
//! again). So the committed data, tokenizer and model config can be
//! regenerated, and a change to the generator that is not committed with
//! its data fails here.
//!
//! Needs `python3` with the packages of `scripts/tiny-data-requirements.txt`
//! at those versions (`.ci/run` installs them). Where they are missing the
//! test says so and passes, except under CI (`CI` set), where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `name==version` pins of the requirements file.
fn pins(root: &Path) -> Vec<(String, String)> {
    let path = root.join("scripts/tiny-data-requirements.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, version) = line
                .split_once("==")
                .unwrap_or_else(|| panic!("{}: {line:?} is not name==version", path.display()));
            (name.to_string(), version.to_string())
        })
        .collect()
}

/// Why the generator cannot run here as pinned, if it cannot.
fn missing_python(pins: &[(String, String)]) -> Option<String> {
    let probe = pins
        .iter()
        .map(|(name, _)| format!("import {name}; print({name}.__version__)"))
        .collect::<Vec<_>>()
        .join("; ");
    let output = match Command::new("python3").args(["-c", &probe]).output() {
        Ok(output) => output,
        Err(error) => return Some(format!("python3 not runnable: {error}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim().lines().last().unwrap_or_default().to_string();
        return Some(format!("python3 lacks a package: {last}"));
    }
    let found = String::from_utf8_lossy(&output.stdout);
    let found: Vec<&str> = found.lines().map(str::trim).collect();
    let wanted: Vec<&str> = pins.iter().map(|(_, version)| version.as_str()).collect();
    (found != wanted)
        .then(|| format!("python3 has versions {found:?}, the data was made with {pins:?}"))
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn the_generator_rebuilds_the_committed_tiny_data_byte_for_byte() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pins = pins(&root);
    if let Some(reason) = missing_python(&pins) {
        let install = "python3 -m pip install -r scripts/tiny-data-requirements.txt";
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI installs them: {install})"
        );
        eprintln!("skipped: {reason}; to run it: {install}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let run = Command::new("python3")
        .arg(root.join("scripts/make_tiny_data.py"))
        .arg("--out")
        .arg(&out)
        .arg("--check")
        .output()
        .expect("running python3");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "make_tiny_data.py failed:\n{log}");
    // `--check` built it a second time and compared the hashes.
    assert!(log.contains(": identical"), "second build differs:\n{log}");

    let (made, committed) = (files(&out), files(&root.join("data/tiny")));
    assert_eq!(
        made.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "the generator writes other files than data/tiny/ holds"
    );
    for (path, bytes) in &committed {
        assert!(
            made[path] == *bytes,
            "data/tiny/{} differs from what scripts/make_tiny_data.py makes: \
             regenerate it (python3 scripts/make_tiny_data.py) and commit both",
            path.display()
        );
    }
}
