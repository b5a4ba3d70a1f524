//! The handbook mixers on the fixture's data: fractions, the seeded
//! shuffle, and the 2025 mixture's train/test split.

use std::path::PathBuf;

use align::data::{Preprocessor, prepare_dpo};
use align::recipe::{Recipe, SplitRole};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-gemma")
        .join(name)
}

/// Source rows of the prepared train or test split of a config written
/// next to a copy of nothing: ids are absolute fixture paths.
fn rows(body: &str, role: SplitRole) -> Vec<usize> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let text = format!(
        "model_name_or_path: {}\nbeta: 0.1\nmax_length: 1024\n{body}",
        fixture("model").display()
    );
    std::fs::write(&path, text).expect("write");
    let recipe = Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    let stage = &recipe.stages[0];
    let pre = Preprocessor::from_stage(stage).unwrap_or_else(|e| panic!("{e}"));
    let split = prepare_dpo(stage, &pre, role).unwrap_or_else(|e| panic!("{e}"));
    split.rows.iter().map(|r| r.example.location.row).collect()
}

fn mixer(fraction: f64, shuffle: bool) -> String {
    format!(
        "dataset_mixer:\n  {}: {fraction}\ndataset_splits: [dpo_train, dpo_test]\ndataset_shuffle: {shuffle}\n",
        fixture("data").display()
    )
}

#[test]
fn mixer_fraction_keeps_the_first_rows_in_file_order_without_shuffle() {
    assert_eq!(
        rows(&mixer(0.5, false), SplitRole::Train),
        (0..17).collect::<Vec<_>>()
    );
    assert_eq!(
        rows(&mixer(0.5, false), SplitRole::Test),
        (0..8).collect::<Vec<_>>(),
        "test splits are kept whole"
    );
}

#[test]
fn mixer_shuffle_is_a_seeded_permutation_of_the_same_rows() {
    let shuffled = rows(&mixer(1.0, true), SplitRole::Train);
    assert_eq!(
        shuffled,
        rows(&mixer(1.0, true), SplitRole::Train),
        "same seed, same order"
    );
    assert_ne!(shuffled, (0..34).collect::<Vec<_>>());
    let mut sorted = shuffled.clone();
    sorted.sort();
    assert_eq!(sorted, (0..34).collect::<Vec<_>>());
}

#[test]
fn mixture_weights_then_test_split_size_carves_the_eval_set() {
    let body = format!(
        "dataset_mixture:\n  datasets:\n    - id: {}\n      split: dpo_train\n      columns: [chosen, rejected]\n      weight: 0.5\n  seed: 0\n  test_split_size: 4\ndataset_shuffle: false\n",
        fixture("data").display()
    );
    assert_eq!(rows(&body, SplitRole::Train), (0..13).collect::<Vec<_>>());
    assert_eq!(rows(&body, SplitRole::Test), (13..17).collect::<Vec<_>>());
    let shuffled = body.replace("dataset_shuffle: false", "dataset_shuffle: true");
    let (train, test) = (
        rows(&shuffled, SplitRole::Train),
        rows(&shuffled, SplitRole::Test),
    );
    assert_eq!((train.len(), test.len()), (13, 4));
    assert!(
        test.iter().all(|row| !train.contains(row)),
        "train and test are disjoint"
    );
}
