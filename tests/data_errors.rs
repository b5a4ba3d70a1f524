//! Bad data: each case is a clear error naming the file, column or row,
//! never a panic. Datasets are written as parquet into a temporary folder;
//! the tokenizer is the fixture's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use align::data::dump_rows;
use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma/model")
}

type Conversation<'a> = Vec<(&'a str, &'a str)>;

/// A `list<struct<content, role>>` column, the hub datasets' layout.
fn conversations(rows: &[Conversation]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("content", DataType::Utf8, true),
        Field::new("role", DataType::Utf8, true),
    ]);
    let mut builder = ListBuilder::new(StructBuilder::from_fields(fields, 0));
    for row in rows {
        let messages = builder.values();
        for (role, content) in row {
            messages
                .field_builder::<StringBuilder>(0)
                .expect("content")
                .append_value(content);
            messages
                .field_builder::<StringBuilder>(1)
                .expect("role")
                .append_value(role);
            messages.append(true);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// A temp folder with `config.yaml` (the given body plus the model and a
/// dataset `ds` of split files written by `make`).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config_body: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ds")).expect("mkdir");
        let config = format!(
            "model_name_or_path: {}\ndataset_shuffle: false\ntrain_sampling_strategy: sequential\n{config_body}",
            fixture_model().display()
        );
        std::fs::write(dir.path().join("config.yaml"), config).expect("write");
        Setup { dir }
    }

    fn split(&self, name: &str, columns: Vec<(&str, ArrayRef)>) -> &Setup {
        write_parquet(
            &self.dir.path().join("ds").join(format!("{name}.parquet")),
            columns,
        );
        self
    }

    fn dump_error(&self, split: Option<&str>) -> String {
        let mut out = Vec::new();
        let config = self.dir.path().join("config.yaml");
        dump_rows(&config, &[], None, split, None, &mut out)
            .map(|summary| format!("unexpected success: {summary}"))
            .unwrap_or_else(|e| e.to_string())
    }

    fn dump_ok(&self) -> usize {
        let mut out = Vec::new();
        let config = self.dir.path().join("config.yaml");
        dump_rows(&config, &[], None, None, None, &mut out)
            .unwrap_or_else(|e| panic!("{e}"))
            .written
    }
}

const DPO: &str =
    "beta: 0.1\nmax_length: 128\ndataset_mixer:\n  ds: 1.0\ndataset_splits: [train]\n";
const SFT: &str = "max_seq_length: 128\ndataset_mixer:\n  ds: 1.0\ndataset_splits: [train]\n";

fn good_pair() -> (Conversation<'static>, Conversation<'static>) {
    (
        vec![("user", "What is 2 plus 2?"), ("assistant", "4.")],
        vec![("user", "What is 2 plus 2?"), ("assistant", "5.")],
    )
}

#[test]
fn a_well_formed_pair_passes() {
    let (chosen, rejected) = good_pair();
    let setup = Setup::new(DPO);
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    assert_eq!(setup.dump_ok(), 1);
}

#[test]
fn missing_dataset_folder_is_named() {
    let setup = Setup::new(&DPO.replace("ds: 1.0", "no_such_dataset: 1.0"));
    let message = setup.dump_error(None);
    assert!(
        message.contains("dataset `no_such_dataset` not found"),
        "{message}"
    );
}

#[test]
fn missing_split_lists_the_splits_found() {
    let (chosen, rejected) = good_pair();
    let setup = Setup::new(&DPO.replace("[train]", "[train_prefs]"));
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("no split `train_prefs`") && message.contains("splits found: train"),
        "{message}"
    );
}

#[test]
fn parquet_without_the_expected_columns_names_the_columns_found() {
    let setup = Setup::new(DPO);
    let text: ArrayRef = Arc::new(StringArray::from(vec!["hello"]));
    setup.split("train", vec![("question", text.clone()), ("answer", text)]);
    let message = setup.dump_error(None);
    assert!(
        message.contains("train.parquet: no usable columns for DPO"),
        "{message}"
    );
    assert!(
        message.contains("columns found: question, answer"),
        "{message}"
    );
}

#[test]
fn a_column_of_the_wrong_type_is_named() {
    let setup = Setup::new(DPO);
    let numbers: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    setup.split(
        "train",
        vec![("chosen", numbers.clone()), ("rejected", numbers)],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("column `chosen` has type Int64"),
        "{message}"
    );
}

#[test]
fn a_conversation_with_no_assistant_turn_names_its_row() {
    let setup = Setup::new(SFT);
    let rows = vec![
        vec![("user", "Hi"), ("assistant", "Hello.")],
        vec![("user", "Is anyone there?")],
    ];
    setup.split("train", vec![("messages", conversations(&rows))]);
    let message = setup.dump_error(None);
    assert!(message.contains("dataset"), "{message}");
    assert!(
        message.contains("split `train` row 1: the conversation has no assistant turn"),
        "{message}"
    );
}

#[test]
fn chosen_and_rejected_with_no_common_prompt_names_the_row() {
    let setup = Setup::new(DPO);
    let chosen = vec![vec![("user", "Question one?"), ("assistant", "Yes.")]];
    let rejected = vec![vec![("user", "Question two?"), ("assistant", "No.")]];
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&chosen)),
            ("rejected", conversations(&rejected)),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("row 0: chosen and rejected have no common prompt"),
        "{message}"
    );
}

#[test]
fn a_dataset_empty_after_filtering_is_an_error() {
    let (chosen, rejected) = good_pair();
    let setup = Setup::new(&DPO.replace("max_length: 128", "max_length: 4"));
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("train split is empty after filtering (1 of 1 rows dropped"),
        "{message}"
    );
}

#[test]
fn a_chat_template_that_raises_names_the_row_and_message() {
    let template = "chat_template: \"{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversations must start with a system message') }}{% endif %}\"\n";
    let (chosen, rejected) = good_pair();
    let setup = Setup::new(&format!("{DPO}{template}"));
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    let message = setup.dump_error(None);
    assert!(message.contains("row 0: chat template raised an exception: Conversations must start with a system message"), "{message}");
}

#[test]
fn a_chat_template_that_does_not_parse_names_its_origin() {
    let (chosen, rejected) = good_pair();
    let setup = Setup::new(&format!(
        "{DPO}chat_template: \"{{% for m in messages %}}\"\n"
    ));
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("key `chat_template`: chat template does not parse"),
        "{message}"
    );
}

#[test]
fn an_unknown_split_argument_is_an_error() {
    let setup = Setup::new(DPO);
    let message = setup.dump_error(Some("validation_prefs"));
    assert!(
        message.contains("unknown split `validation_prefs`"),
        "{message}"
    );
}

#[test]
fn legacy_pairs_need_a_prompt_before_the_last_message() {
    let setup = Setup::new(&format!("{DPO}compat: trl-0.7\n"));
    setup.split(
        "train",
        vec![
            (
                "chosen",
                conversations(&[good_pair().0, vec![("assistant", "4.")]]),
            ),
            (
                "rejected",
                conversations(&[good_pair().1, vec![("assistant", "5.")]]),
            ),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("row 1: chosen has a single message"),
        "{message}"
    );
}

#[test]
fn legacy_prompt_limit_above_max_length_is_refused() {
    let setup = Setup::new(&format!("{DPO}compat: trl-0.7\nmax_prompt_length: 256\n"));
    let (chosen, rejected) = good_pair();
    setup.split(
        "train",
        vec![
            ("chosen", conversations(&[chosen])),
            ("rejected", conversations(&[rejected])),
        ],
    );
    let message = setup.dump_error(None);
    assert!(
        message.contains("`max_prompt_length`: 256 exceeds max_length 128"),
        "{message}"
    );
}
