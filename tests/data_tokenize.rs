//! Every row of the fixture's `expected/tokenized.jsonl` (DPO) and
//! `expected/sft_tokenized.jsonl` (SFT) must come out of `align data`
//! identical: rendered texts byte for byte, token ids, masks, drops.

use std::path::PathBuf;

use align::data::{
    DpoBatch, Preprocessor, SftBatch, dump_rows, epoch_order, micro_batches, prepare_dpo,
    prepare_sft,
};
use align::recipe::{Recipe, SplitRole, StageKind};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-gemma")
        .join(name)
}

fn read_jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line: {e}")))
        .collect()
}

fn expected(name: &str) -> Vec<Value> {
    let path = fixture("expected").join(name);
    read_jsonl(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

fn dump(config: &str, split: Option<&str>) -> (Vec<Value>, align::data::DataSummary) {
    let mut out = Vec::new();
    let summary = dump_rows(&fixture(config), &[], None, split, None, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    (read_jsonl(&String::from_utf8(out).expect("UTF-8")), summary)
}

/// Every field of `want` must equal ours (`drop_reason`: our text is the
/// start of the fixture's, which adds the TRL function name).
fn assert_row_matches(got: &Value, want: &Value, index: usize) {
    let want = want.as_object().expect("object");
    for (key, want_value) in want {
        let got_value = got
            .get(key)
            .unwrap_or_else(|| panic!("row {index}: field `{key}` missing"));
        if key == "drop_reason" {
            let (g, w) = (
                got_value.as_str().unwrap_or_default(),
                want_value.as_str().unwrap_or_default(),
            );
            assert!(
                w.starts_with(g) && !g.is_empty(),
                "row {index}: drop_reason {g:?} vs {w:?}"
            );
            continue;
        }
        assert_eq!(got_value, want_value, "row {index}: field `{key}` differs");
    }
}

#[test]
fn every_dpo_fixture_row_matches() {
    let (rows, summary) = dump("recipe_dpo.yaml", None);
    let want = expected("tokenized.jsonl");
    assert_eq!(rows.len(), want.len(), "row count");
    assert_eq!(want.len(), 34);
    for (index, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert_row_matches(got, want, index);
    }
    assert_eq!(
        (
            summary.rows,
            summary.dropped,
            summary.truncated,
            summary.written
        ),
        (34, 2, 4, 34)
    );
    let dropped: Vec<u64> = rows
        .iter()
        .filter(|r| r["dropped"] == true)
        .map(|r| r["row"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(dropped, [5, 16]);
}

#[test]
fn every_sft_fixture_row_matches() {
    let (rows, summary) = dump("recipe_sft.yaml", None);
    let want = expected("sft_tokenized.jsonl");
    assert_eq!(rows.len(), want.len(), "row count");
    assert_eq!(want.len(), 32);
    for (index, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert_row_matches(got, want, index);
    }
    assert_eq!(
        (summary.rows, summary.dropped, summary.truncated),
        (32, 0, 3)
    );
}

#[test]
fn limit_and_test_split_are_honoured() {
    let mut out = Vec::new();
    let summary = dump_rows(
        &fixture("recipe_dpo.yaml"),
        &[],
        Some(StageKind::Dpo),
        Some("test"),
        Some(3),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.split, "test");
    assert_eq!(summary.rows, 8);
    assert_eq!(summary.written, 3);
    assert_eq!(read_jsonl(&String::from_utf8(out).expect("UTF-8")).len(), 3);
}

#[test]
fn dpo_micro_batches_are_the_fixture_rows_in_sequential_order() {
    let recipe = Recipe::load(&fixture("recipe_dpo.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let stage = &recipe.stages[0];
    let pre = Preprocessor::from_stage(stage).unwrap_or_else(|e| panic!("{e}"));
    let split = prepare_dpo(stage, &pre, SplitRole::Train).unwrap_or_else(|e| panic!("{e}"));
    let examples = split.examples();
    assert_eq!(examples.len(), 32);
    let t = &stage.training;
    let order = epoch_order(examples.len(), t.train_sampling_strategy, t.seed, 1);
    let batches = micro_batches(
        &order,
        t.per_device_train_batch_size,
        t.dataloader_drop_last,
    );
    assert_eq!(batches.len(), 16);
    assert_eq!(t.total_steps(batches.len()), 16);

    let want: Vec<Value> = expected("tokenized.jsonl")
        .into_iter()
        .filter(|r| r["dropped"] == false)
        .collect();
    for indices in &batches {
        let refs: Vec<_> = indices.iter().map(|i| &examples[*i]).collect();
        let batch = DpoBatch::collate(
            &refs,
            indices,
            pre.pad_token_id,
            pre.max_length,
            pre.truncation,
        );
        let [rows, seq_len] = batch.shape();
        assert_eq!(rows, 2 * indices.len());
        for (k, index) in indices.iter().enumerate() {
            for (side, offset) in [("chosen", 0), ("rejected", indices.len())] {
                let ids: Vec<i64> = want[*index][format!("{side}_input_ids")]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_i64().expect("int"))
                    .collect();
                let row = &batch.input_ids[(offset + k) * seq_len..(offset + k + 1) * seq_len];
                assert_eq!(&row[..ids.len()], ids.as_slice(), "pair {index} {side}");
                assert!(
                    row[ids.len()..].iter().all(|t| *t == 0),
                    "padded with <pad>=0"
                );
                let mask =
                    &batch.completion_mask[(offset + k) * seq_len..(offset + k + 1) * seq_len];
                let want_mask: Vec<i64> = want[*index][format!("{side}_completion_mask")]
                    .as_array()
                    .expect("mask")
                    .iter()
                    .map(|v| v.as_i64().expect("int"))
                    .collect();
                assert_eq!(&mask[..want_mask.len()], want_mask.as_slice());
            }
        }
    }
}

#[test]
fn sft_batches_pad_labels_with_ignore_index() {
    let recipe = Recipe::load(&fixture("recipe_sft.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let stage = &recipe.stages[0];
    let pre = Preprocessor::from_stage(stage).unwrap_or_else(|e| panic!("{e}"));
    let split = prepare_sft(stage, &pre, SplitRole::Train).unwrap_or_else(|e| panic!("{e}"));
    let examples = split.examples();
    assert_eq!(examples.len(), 32);
    let refs: Vec<_> = examples[..2].iter().collect();
    let batch = SftBatch::collate(&refs, &[0, 1], pre.pad_token_id);
    let lengths = [examples[0].input_ids.len(), examples[1].input_ids.len()];
    assert_eq!(batch.seq_len, lengths[0].max(lengths[1]));
    for (row, len) in lengths.iter().enumerate() {
        let labels = &batch.labels[row * batch.seq_len..(row + 1) * batch.seq_len];
        assert!(labels[*len..].iter().all(|l| *l == -100));
        assert!(labels[..*len].iter().all(|l| *l >= 0));
    }
    assert_eq!(batch.predicted_tokens(), lengths[0] - 1 + lengths[1] - 1);
}
