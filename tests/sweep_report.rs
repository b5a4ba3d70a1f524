//! `align sweep` and `align report` on the fixture: a 2x2 grid gives four
//! run folders and a report whose table is each run's own `metrics.jsonl`
//! and whose plots decode; a stopped sweep resumes without rerunning what
//! finished; a chain trains a stage the grid does not change once; bad grids
//! fail before anything runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use align::backend::{CpuTrain, cpu_device};
use align::sweep::{RunStatus, SweepError, SweepOutcome, grid_for, plan, run_sweep};
use align::train::stage::RunOptions;
use common::{fixture, read_jsonl};
use serde_json::Value;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The fixture's DPO recipe, shortened, into `out`.
fn dpo_set(out: &Path, max_steps: usize) -> Vec<String> {
    vec![
        format!("output_dir={}", out.display()),
        format!("max_steps={max_steps}"),
    ]
}

fn sweep(recipe: &Path, grid: &[&str], set: &[String]) -> Result<SweepOutcome, SweepError> {
    let grid = grid_for(recipe, &strings(grid))?;
    let plan = plan(recipe, set, grid)?;
    let options = RunOptions {
        quiet: true,
        ..Default::default()
    };
    run_sweep::<CpuTrain>(&plan, &options, &cpu_device())
}

/// The report's table: one map of column title to cell text per row.
fn table_rows(markdown: &str) -> Vec<BTreeMap<String, String>> {
    let lines: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().trim_matches('*').trim_matches('`').to_string())
            .collect()
    };
    let header = cells(lines[0]);
    lines[2..]
        .iter()
        .map(|line| header.iter().cloned().zip(cells(line)).collect())
        .collect()
}

/// What the table should say for a run, read straight from its log.
fn expected_cells(dir: &Path) -> BTreeMap<&'static str, f64> {
    let log = read_jsonl(&dir.join("metrics.jsonl"));
    let summary = log.iter().find(|e| e.get("train_loss").is_some()).unwrap();
    let steps: Vec<&Value> = log
        .iter()
        .filter(|e| e.get("loss").is_some() && e.get("train_loss").is_none())
        .collect();
    let eval = log
        .iter()
        .rev()
        .find(|e| e.get("eval_loss").is_some())
        .unwrap();
    let last = steps.last().unwrap();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let runtime = f(summary, "train_runtime");
    BTreeMap::from([
        ("loss (last step)", f(last, "loss")),
        ("train_loss (mean)", f(summary, "train_loss")),
        ("eval_loss", f(eval, "eval_loss")),
        (
            "eval_rewards/accuracies",
            f(eval, "eval_rewards/accuracies"),
        ),
        ("eval_rewards/margins", f(eval, "eval_rewards/margins")),
        ("wall time (s)", runtime),
        ("tokens/s", f(last, "num_tokens") / runtime),
    ])
}

/// Width and height of a PNG, and whether anything but white was drawn.
fn decode_png(path: &Path) -> (u32, u32, bool) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let drawn = pixels[..info.buffer_size()]
        .iter()
        .filter(|&&b| b != 255)
        .count();
    (info.width, info.height, drawn > 1000)
}

#[test]
fn a_two_by_two_sweep_writes_four_runs_and_a_matching_report() {
    let out = tempfile::tempdir().unwrap();
    let dpo = out.path().join("dpo");
    let outcome = sweep(
        &fixture("tiny-gemma/recipe_dpo.yaml"),
        &["beta=0.05,0.5", "learning_rate=0.001,0.01"],
        &dpo_set(&dpo, 2),
    )
    .unwrap();
    let root = dpo.join("sweep");
    let names = [
        "beta=0.05,learning_rate=0.001",
        "beta=0.05,learning_rate=0.01",
        "beta=0.5,learning_rate=0.001",
        "beta=0.5,learning_rate=0.01",
    ];
    for (name, (run, status)) in names.iter().zip(&outcome.runs) {
        assert!(matches!(status, RunStatus::Ran), "{name}: {status:?}");
        assert_eq!(run.dir, root.join(name));
        assert!(run.dir.join("model.safetensors").is_file(), "{name}");
        // Its own resolved recipe, with the grid's values.
        let recipe: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(run.dir.join("recipe.yaml")).unwrap())
                .unwrap();
        let (beta, lr) = name.split_once(',').unwrap();
        assert_eq!(format!("beta={}", recipe["beta"].as_f64().unwrap()), beta);
        let lr_value = recipe["learning_rate"].as_f64().unwrap();
        assert_eq!(format!("learning_rate={lr_value}"), lr);
        assert_eq!(recipe["max_steps"].as_i64(), Some(2));
    }

    let report = outcome.report.as_ref().unwrap();
    assert_eq!(report.markdown, root.join("report.md"));
    let rows = table_rows(&std::fs::read_to_string(&report.markdown).unwrap());
    assert_eq!(rows.len(), 4);
    for (row, name) in rows.iter().zip(names) {
        assert_eq!(row["run"], name);
        let (beta, lr) = name.split_once(',').unwrap();
        assert_eq!(format!("beta={}", row["beta"]), beta);
        assert_eq!(format!("learning_rate={}", row["learning_rate"]), lr);
        for (column, want) in expected_cells(&root.join(name)) {
            let got: f64 = row[column]
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {column} = {:?}", row[column]));
            // Four significant digits.
            assert!(
                (got - want).abs() <= 1e-3 * want.abs(),
                "{name}: {column} {got} vs {want}"
            );
        }
    }

    let plots: Vec<String> = report
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for file in [
        "loss.png",
        "rewards_margins.png",
        "rewards_accuracies.png",
        "eval_vs_beta.png",
        "eval_vs_learning_rate.png",
    ] {
        assert!(plots.iter().any(|p| p == file), "{file} in {plots:?}");
    }
    for plot in &report.plots {
        let (width, height, drawn) = decode_png(plot);
        let name = plot.file_name().unwrap().to_string_lossy();
        match name.starts_with("eval_vs_") {
            true => assert_eq!((width, height), (3 * 440, 400), "{name}"),
            false => assert_eq!((width, height), (900, 520), "{name}"),
        }
        assert!(drawn, "{name} is blank");
    }

    // `align report` on the sweep folder says the same.
    let again = out.path().join("again");
    let report = align::report::write_report(std::slice::from_ref(&root), &again).unwrap();
    assert_eq!(report.runs.len(), 4);
    let rows_again = table_rows(&std::fs::read_to_string(&report.markdown).unwrap());
    let without_run = |rows: &[BTreeMap<String, String>]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| *k != "run")
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .collect()
    };
    assert_eq!(without_run(&rows_again), without_run(&rows));
}

#[test]
fn a_stopped_sweep_resumes_without_rerunning_finished_runs() {
    let out = tempfile::tempdir().unwrap();
    let dpo = out.path().join("dpo");
    let recipe = fixture("tiny-gemma/recipe_dpo.yaml");
    let set = dpo_set(&dpo, 1);
    let grid = ["beta=0.05,0.1,0.5"];
    let first = sweep(&recipe, &grid, &set).unwrap();
    let dirs: Vec<PathBuf> = first.runs.iter().map(|(r, _)| r.dir.clone()).collect();
    let logs: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap())
        .collect();

    // Stopped during the second run (its log has no summary yet, no model),
    // before the third.
    std::fs::remove_file(dirs[1].join("model.safetensors")).unwrap();
    let partial = logs[1].lines().next().unwrap().to_string() + "\n";
    std::fs::write(dirs[1].join("metrics.jsonl"), partial).unwrap();
    std::fs::remove_dir_all(&dirs[2]).unwrap();

    let resumed = sweep(&recipe, &grid, &set).unwrap();
    let ran: Vec<bool> = resumed
        .runs
        .iter()
        .map(|(_, status)| matches!(status, RunStatus::Ran))
        .collect();
    assert_eq!(ran, vec![false, true, true]);
    let log0 = std::fs::read_to_string(dirs[0].join("metrics.jsonl")).unwrap();
    assert_eq!(log0, logs[0], "the finished run was not rerun");
    for (dir, before) in dirs.iter().zip(&logs).skip(1) {
        let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert!(log.contains("\"train_loss\""), "{} finished", dir.display());
        assert_eq!(log.lines().count(), before.lines().count(), "a fresh log");
    }
    assert_eq!(resumed.report.unwrap().runs, dirs);

    // Resuming with other settings would report stale runs: refused.
    let err = sweep(&recipe, &grid, &dpo_set(&dpo, 2)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SweepError::Stale { .. }) && message.contains("max_steps"),
        "{message}"
    );
}

#[test]
fn a_diverging_run_does_not_stop_the_others() {
    let out = tempfile::tempdir().unwrap();
    let dpo = out.path().join("dpo");
    let recipe = fixture("tiny-gemma/recipe_dpo.yaml");
    // lr 1e30 makes step 3's gradient NaN (step 1 is warmup at lr 0).
    let outcome = sweep(&recipe, &["learning_rate=1e30,0.001"], &dpo_set(&dpo, 4)).unwrap();
    assert!(matches!(outcome.runs[0].1, RunStatus::Failed(_)));
    assert!(matches!(outcome.runs[1].1, RunStatus::Ran));
    let failures = outcome.failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("not finite"), "{failures:?}");
    // Both are in the report: the failed run with the steps it logged.
    let report = outcome.report.unwrap();
    let rows = table_rows(&std::fs::read_to_string(&report.markdown).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["train_loss (mean)"], "-");
    assert_ne!(rows[1]["train_loss (mean)"], "-");
}

/// A chained recipe (the fixture's SFT then DPO), with a `sweep:` section.
fn chain(dir: &Path, sweep_section: &str) -> PathBuf {
    let path = dir.join("recipe.yaml");
    let text = format!(
        "stages:\n- sft: {}\n- dpo: {}\n{sweep_section}",
        fixture("tiny-gemma/recipe_sft.yaml").display(),
        fixture("tiny-gemma/recipe_dpo.yaml").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn chain_set(out: &Path) -> Vec<String> {
    vec![
        format!("sft.output_dir={}", out.join("sft").display()),
        format!("dpo.output_dir={}", out.join("dpo").display()),
        "max_steps=1".into(),
    ]
}

#[test]
fn a_chain_trains_the_stage_the_grid_does_not_change_once() {
    let out = tempfile::tempdir().unwrap();
    let recipe = chain(out.path(), "sweep:\n  dpo.beta: [0.05, 0.5]\n");
    // Other commands run the recipe as it is.
    align::recipe::Recipe::load(&recipe, &[]).unwrap();

    let set = chain_set(out.path());
    let grid = grid_for(&recipe, &[]).unwrap();
    let shared = plan(&recipe, &set, grid).unwrap();
    let sft_dir = out.path().join("sft/sweep/shared");
    for (run, beta) in shared.runs.iter().zip(["0.05", "0.5"]) {
        assert_eq!(run.stages[0].output_dir, sft_dir);
        let dpo_dir = out.path().join(format!("dpo/sweep/dpo.beta={beta}"));
        assert_eq!(run.stages[1].output_dir, dpo_dir);
        assert_eq!(run.dir, dpo_dir);
    }

    // --grid replaces the section's key; one value is one run.
    let grid = grid_for(&recipe, &strings(&["dpo.beta=0.1"])).unwrap();
    let single = plan(&recipe, &set, grid).unwrap();
    assert_eq!(single.runs.len(), 1);
    assert_eq!(
        single.runs[0].dir,
        out.path().join("dpo/sweep/dpo.beta=0.1")
    );

    // An SFT key changes both stages: each run has its own SFT model.
    let grid = grid_for(&recipe, &strings(&["sft.learning_rate=0.001,0.002"])).unwrap();
    let both = plan(&recipe, &set, grid).unwrap();
    let run = &both.runs[3];
    let name = "dpo.beta=0.5,sft.learning_rate=0.002";
    assert_eq!(run.dir, out.path().join("dpo/sweep").join(name));
    let sft = out.path().join("sft/sweep/sft.learning_rate=0.002");
    assert_eq!(run.stages[0].output_dir, sft);

    // Run the first plan: one SFT, two DPO runs starting from it.
    let outcome = run_sweep::<CpuTrain>(
        &shared,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
        &cpu_device(),
    )
    .unwrap();
    assert_eq!(outcome.report.unwrap().runs.len(), 2);
    let sft_folders = std::fs::read_dir(out.path().join("sft/sweep"))
        .unwrap()
        .count();
    assert_eq!(sft_folders, 1);
    for (run, _) in &outcome.runs {
        let recipe = std::fs::read_to_string(run.dir.join("recipe.yaml")).unwrap();
        let recipe: serde_yaml_ng::Value = serde_yaml_ng::from_str(&recipe).unwrap();
        let model = recipe["model_name_or_path"].as_str().unwrap();
        assert_eq!(Path::new(model), sft_dir);
    }
}

#[test]
fn bad_grids_fail_before_any_run() {
    let out = tempfile::tempdir().unwrap();
    let dpo = out.path().join("dpo");
    let recipe = fixture("tiny-gemma/recipe_dpo.yaml");
    let set = dpo_set(&dpo, 1);
    for (grid, needle) in [
        (
            vec!["betta=0.1,0.2"],
            "unknown key `betta` (did you mean `beta`?)",
        ),
        (vec!["beta="], "no values for `beta`"),
        (vec!["beta=0.1,,0.2"], "value 2 is empty"),
        (vec!["beta=0.1,abc"], "--grid `beta=abc`"),
        (vec!["max_steps=1,two"], "--grid `max_steps=two`"),
        (vec!["beta=0.1", "beta=0.2"], "swept twice"),
        (
            vec!["push_to_hub=true,false"],
            "every value gives the same recipe",
        ),
        (vec![], "nothing to sweep"),
    ] {
        let err = sweep(&recipe, &grid, &set).expect_err(&format!("{grid:?}"));
        let message = err.to_string();
        assert!(message.contains(needle), "{grid:?}: {message}");
    }
    // A stage key in a chain names the stage it does not belong to.
    let chained = chain(out.path(), "");
    let err = sweep(&chained, &["beta=0.1,0.5"], &chain_set(out.path())).unwrap_err();
    assert!(err.to_string().contains("is a DPO key"), "{err}");
    assert!(!dpo.exists(), "nothing ran");
    assert!(!out.path().join("sft").exists(), "nothing ran");
}
