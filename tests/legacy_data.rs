//! `compat: trl-0.7` data against the legacy fixture (handbook ff618a4 +
//! TRL 0.7.10): `align data` reproduces every field of every row of
//! `expected/tokenized.jsonl` (DPO) and every packed sequence of
//! `expected/sft_packed.jsonl` (SFT, train and test), the rendered SFT
//! texts of `expected/sft_texts.jsonl`, and the trainer's micro-batches
//! hold exactly TRL's sequences and labels.

mod common;

use align::data::{
    DataSummary, DpoBatch, Preprocessor, dump_rows, prepare_dpo, prepare_sft, prepare_sft_trl07,
};
use align::recipe::{Recipe, SplitRole};
use common::{fixture, ints, read_jsonl};
use serde_json::Value;

fn legacy(name: &str) -> std::path::PathBuf {
    fixture("tiny-gemma-legacy").join(name)
}

fn dump(config: &str, split: Option<&str>) -> (Vec<Value>, DataSummary) {
    let mut out = Vec::new();
    let summary = dump_rows(&legacy(config), &[], None, split, None, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(out).expect("UTF-8");
    let rows = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (rows, summary)
}

/// Every field of `want` equals ours.
fn assert_same_fields(got: &Value, want: &Value, what: &str) {
    for (key, value) in want.as_object().expect("object") {
        assert_eq!(got.get(key), Some(value), "{what}: field `{key}` differs");
    }
}

fn stage(config: &str) -> align::recipe::StageConfig {
    Recipe::load(&legacy(config), &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .stages
        .remove(0)
}

#[test]
fn every_dpo_row_matches_trl_0_7_10() {
    let (rows, summary) = dump("recipe_dpo.yaml", None);
    let want = read_jsonl(&legacy("expected/tokenized.jsonl"));
    assert_eq!((rows.len(), want.len()), (34, 34));
    for (got, want) in rows.iter().zip(&want) {
        assert_same_fields(got, want, &format!("row {}", want["row"]));
    }
    // Prompts cut in rows 5, 16, 30; answers in 6, 14, 29, 30; none dropped.
    assert_eq!(
        (summary.rows, summary.dropped, summary.truncated),
        (34, 0, 6)
    );
}

#[test]
fn every_packed_sft_sequence_matches_constant_length_dataset() {
    let want = read_jsonl(&legacy("expected/sft_packed.jsonl"));
    let (train, summary) = dump("recipe_sft.yaml", None);
    let (test, _) = dump("recipe_sft.yaml", Some("test"));
    assert_eq!((train.len(), test.len()), (18, 4));
    assert_eq!(summary.rows, 32);
    for (got, want) in train.iter().chain(&test).zip(&want) {
        let what = format!("{} sequence {}", want["split"], want["index"]);
        assert_same_fields(got, want, &what);
    }
}

#[test]
fn sft_texts_and_stream_offsets_match_the_handbook_rendering() {
    let stage = stage("recipe_sft.yaml");
    let pre = Preprocessor::from_stage(&stage).unwrap_or_else(|e| panic!("{e}"));
    let want = read_jsonl(&legacy("expected/sft_texts.jsonl"));
    let mut checked = 0;
    for (role, name) in [(SplitRole::Train, "train"), (SplitRole::Test, "test")] {
        let split = prepare_sft_trl07(&stage, &pre, role).unwrap_or_else(|e| panic!("{e}"));
        let expected: Vec<&Value> = want.iter().filter(|w| w["split"] == name).collect();
        assert_eq!(split.texts.len(), expected.len());
        let mut offset = 0;
        for (text, w) in split.texts.iter().zip(expected) {
            let row = w["row"].as_u64().unwrap();
            assert_eq!(text.text, w["text"].as_str().unwrap(), "{name} row {row}");
            let ids: Vec<i64> = text.input_ids.iter().map(|&t| i64::from(t)).collect();
            assert_eq!(ids, ints(&w["input_ids"]), "{name} row {row}");
            assert_eq!(offset, w["stream_offset"].as_u64().unwrap() as usize);
            let messages = serde_json::to_value(&text.messages).unwrap();
            assert_eq!(messages, w["messages"], "{name} row {row}");
            offset += text.input_ids.len();
            checked += 1;
        }
    }
    assert_eq!(checked, want.len());
}

#[test]
fn packed_sft_examples_score_every_token() {
    let stage = stage("recipe_sft.yaml");
    let pre = Preprocessor::from_stage(&stage).unwrap_or_else(|e| panic!("{e}"));
    let examples = prepare_sft(&stage, &pre, SplitRole::Train)
        .unwrap_or_else(|e| panic!("{e}"))
        .examples();
    let want = read_jsonl(&legacy("expected/sft_packed.jsonl"));
    assert_eq!(examples.len(), 18);
    for (example, w) in examples.iter().zip(&want) {
        let ids: Vec<i64> = example.input_ids.iter().map(|&t| i64::from(t)).collect();
        assert_eq!(ids, ints(&w["input_ids"]));
        assert_eq!(example.labels, ids, "labels = input_ids");
    }
}

/// The trainer's collation of the prepared pairs gives TRL's padded
/// `chosen_*`/`rejected_*` rows: ids, and completion mask = labels ≠ -100.
#[test]
fn dpo_micro_batches_hold_trls_sequences_and_labels() {
    let stage = stage("recipe_dpo.yaml");
    let pre = Preprocessor::from_stage(&stage).unwrap_or_else(|e| panic!("{e}"));
    let examples = prepare_dpo(&stage, &pre, SplitRole::Train)
        .unwrap_or_else(|e| panic!("{e}"))
        .examples();
    let want = read_jsonl(&legacy("expected/tokenized.jsonl"));
    assert_eq!(examples.len(), 34);
    let indices: Vec<usize> = (0..34).collect();
    for pair in indices.chunks(2) {
        let refs: Vec<_> = pair.iter().map(|&i| &examples[i]).collect();
        let batch = DpoBatch::collate(
            &refs,
            pair,
            pre.pad_token_id,
            pre.max_length,
            pre.truncation,
        );
        let width = batch.seq_len;
        for (k, &i) in pair.iter().enumerate() {
            for (side, offset) in [("chosen", 0), ("rejected", pair.len())] {
                let row = (offset + k) * width..(offset + k + 1) * width;
                let ids = ints(&want[i][format!("{side}_input_ids")]);
                let labels = ints(&want[i][format!("{side}_labels")]);
                assert_eq!(&batch.input_ids[row.clone()][..ids.len()], ids.as_slice());
                let mask: Vec<i64> = labels.iter().map(|&l| i64::from(l != -100)).collect();
                assert_eq!(&batch.completion_mask[row][..mask.len()], mask.as_slice());
            }
        }
    }
}
