//! Dataset rows as TRL sees them: which columns make a preference pair or
//! an SFT example, and how arrow cells become messages.
//!
//! Accepted, as TRL accepts them: DPO `chosen` + `rejected` (+ optional
//! explicit `prompt`), each a string or a list of `{role, content}`
//! messages; SFT `messages` (conversational), else `prompt` + `completion`,
//! else the text field (`dataset_text_field`, default `text`). Other columns
//! are not read (like the handbook, which keeps only these).

use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, StructArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde::Serialize;

use super::error::{DataError, RowLocation};
use super::source::read_parquet;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A cell: plain text or a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Plain(String),
    Chat(Vec<Message>),
}

/// One dataset row, by the TRL dataset type it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Preference data; `prompt` is `None` for the implicit-prompt form.
    Preference {
        prompt: Option<Text>,
        chosen: Text,
        rejected: Text,
    },
    /// Conversational language modelling (`messages`).
    Chat(Vec<Message>),
    /// Prompt-completion data.
    PromptCompletion { prompt: Text, completion: Text },
    /// Plain language modelling (the text field).
    Plain(String),
}

/// A record and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub location: RowLocation,
    pub record: Record,
}

/// Which records the stage needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    Preference,
    Sft { text_field: String },
}

/// The shape of a usable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    Chat,
}

/// The columns chosen for a file, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    Preference { prompt: bool },
    Chat,
    PromptCompletion,
    Plain(String),
}

impl Layout {
    fn columns(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Layout::Preference { prompt: true } => &["prompt", "chosen", "rejected"],
            Layout::Preference { prompt: false } => &["chosen", "rejected"],
            Layout::Chat => &["messages"],
            Layout::PromptCompletion => &["prompt", "completion"],
            Layout::Plain(field) => return vec![field.clone()],
        };
        names.iter().map(|n| n.to_string()).collect()
    }
}

/// Where the rows of one split come from.
pub struct SplitInput<'a> {
    pub dataset: &'a str,
    pub split: &'a str,
    pub files: &'a [PathBuf],
    /// The 2025 mixture's `columns`: only these may be read.
    pub columns: Option<&'a [String]>,
}

/// Read every row of a split's files, in file order.
pub fn read_rows(input: &SplitInput, kind: &RecordKind) -> Result<Vec<RawRow>, DataError> {
    let mut rows = Vec::new();
    for file in input.files {
        let layout = std::cell::Cell::new(None);
        let batches = read_parquet(file, |schema| {
            let chosen = choose_layout(file, schema, kind, input.columns)?;
            let columns = chosen.columns();
            layout.set(Some(chosen));
            Ok(columns)
        })?;
        let layout = layout
            .take()
            .expect("read_parquet calls select before reading");
        for batch in &batches {
            let columns: Vec<&ArrayRef> = layout
                .columns()
                .iter()
                .map(|name| batch.column_by_name(name).expect("projected column"))
                .collect();
            for i in 0..batch.num_rows() {
                let location = RowLocation {
                    dataset: input.dataset.to_string(),
                    split: input.split.to_string(),
                    row: rows.len(),
                };
                let record = build_record(&layout, &columns, i, &location)?;
                rows.push(RawRow { location, record });
            }
        }
    }
    Ok(rows)
}

fn choose_layout(
    file: &Path,
    schema: &Schema,
    kind: &RecordKind,
    allowed: Option<&[String]>,
) -> Result<Layout, DataError> {
    let visible = |name: &str| allowed.is_none_or(|cols| cols.iter().any(|c| c == name));
    let field = |name: &str| -> Option<&Field> {
        visible(name)
            .then(|| schema.field_with_name(name).ok())
            .flatten()
    };
    let shape_of = |name: &str| -> Result<Option<Shape>, DataError> {
        field(name).map(|f| shape(file, f)).transpose()
    };
    let layout = match kind {
        RecordKind::Preference => match (shape_of("chosen")?, shape_of("rejected")?) {
            (Some(_), Some(_)) => Some(Layout::Preference {
                prompt: shape_of("prompt")?.is_some(),
            }),
            _ => None,
        },
        RecordKind::Sft { text_field } => {
            if let Some(found) = shape_of("messages")? {
                if found != Shape::Chat {
                    return Err(column_type(
                        file,
                        "messages",
                        schema,
                        "list<struct<content: string, role: string>>",
                    ));
                }
                Some(Layout::Chat)
            } else if shape_of("prompt")?.is_some() && shape_of("completion")?.is_some() {
                Some(Layout::PromptCompletion)
            } else {
                shape_of(text_field)?.map(|_| Layout::Plain(text_field.clone()))
            }
        }
    };
    layout.ok_or_else(|| DataError::MissingColumns {
        path: file.to_path_buf(),
        expected: match kind {
            RecordKind::Preference => "DPO (`chosen` and `rejected`, optionally `prompt`)".into(),
            RecordKind::Sft { text_field } => {
                format!("SFT (`messages`, or `prompt` and `completion`, or `{text_field}`)")
            }
        },
        found: schema.fields().iter().map(|f| f.name().clone()).collect(),
    })
}

fn column_type(file: &Path, name: &str, schema: &Schema, expected: &'static str) -> DataError {
    DataError::ColumnType {
        path: file.to_path_buf(),
        column: name.to_string(),
        expected,
        found: schema
            .field_with_name(name)
            .map(|f| f.data_type().to_string())
            .unwrap_or_default(),
    }
}

/// Plain for strings, Chat for lists of structs with string `role` and
/// `content`; anything else is a type error.
fn shape(file: &Path, field: &Field) -> Result<Shape, DataError> {
    let is_string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let chat = match field.data_type() {
        t if is_string(t) => return Ok(Shape::Plain),
        DataType::List(item) | DataType::LargeList(item) => match item.data_type() {
            DataType::Struct(fields) => ["role", "content"].iter().all(|name| {
                fields
                    .iter()
                    .any(|f| f.name() == name && is_string(f.data_type()))
            }),
            _ => false,
        },
        _ => false,
    };
    if chat {
        Ok(Shape::Chat)
    } else {
        Err(DataError::ColumnType {
            path: file.to_path_buf(),
            column: field.name().clone(),
            expected: "a string or list<struct<content: string, role: string>>",
            found: field.data_type().to_string(),
        })
    }
}

fn build_record(
    layout: &Layout,
    columns: &[&ArrayRef],
    i: usize,
    location: &RowLocation,
) -> Result<Record, DataError> {
    let names = layout.columns();
    let cell = |k: usize| text_cell(columns[k], i, &names[k], location);
    Ok(match layout {
        Layout::Preference { prompt: true } => Record::Preference {
            prompt: Some(cell(0)?),
            chosen: cell(1)?,
            rejected: cell(2)?,
        },
        Layout::Preference { prompt: false } => Record::Preference {
            prompt: None,
            chosen: cell(0)?,
            rejected: cell(1)?,
        },
        Layout::Chat => match cell(0)? {
            Text::Chat(messages) => Record::Chat(messages),
            Text::Plain(_) => unreachable!("layout checked the column is a list"),
        },
        Layout::PromptCompletion => Record::PromptCompletion {
            prompt: cell(0)?,
            completion: cell(1)?,
        },
        Layout::Plain(_) => match cell(0)? {
            Text::Plain(text) => Record::Plain(text),
            Text::Chat(_) => unreachable!("layout checked the column is a string"),
        },
    })
}

fn text_cell(
    array: &ArrayRef,
    i: usize,
    column: &str,
    location: &RowLocation,
) -> Result<Text, DataError> {
    let row_error = |message: String| DataError::Row {
        location: location.clone(),
        message,
    };
    if array.is_null(i) {
        return Err(row_error(format!("column `{column}` is null")));
    }
    if let Some(text) = string_at(array.as_ref(), i) {
        return Ok(Text::Plain(text));
    }
    let messages = if let Some(list) = array.as_list_opt::<i32>() {
        messages_at(list, i)
    } else if let Some(list) = array.as_list_opt::<i64>() {
        messages_at(list, i)
    } else {
        Err(format!("column `{column}` is not text"))
    };
    messages
        .map(Text::Chat)
        .map_err(|m| row_error(format!("column `{column}`: {m}")))
}

fn messages_at<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    i: usize,
) -> Result<Vec<Message>, String> {
    let items = list.value(i);
    let structs: &StructArray = items.as_struct_opt().ok_or("list items are not structs")?;
    let role = structs
        .column_by_name("role")
        .ok_or("messages have no `role`")?;
    let content = structs
        .column_by_name("content")
        .ok_or("messages have no `content`")?;
    (0..structs.len())
        .map(|m| {
            let field = |array: &ArrayRef, name: &str| {
                string_at(array.as_ref(), m)
                    .ok_or_else(|| format!("message {m} has a null `{name}`"))
            };
            Ok(Message {
                role: field(role, "role")?,
                content: field(content, "content")?,
            })
        })
        .collect()
}

/// The string at `i` of a string column of any offset width; `None` if the
/// column is not a string column or the cell is null.
fn string_at(array: &dyn Array, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        Some(a.value(i).to_string())
    } else if let Some(a) = array.as_string_opt::<i64>() {
        Some(a.value(i).to_string())
    } else {
        array.as_string_view_opt().map(|a| a.value(i).to_string())
    }
}
