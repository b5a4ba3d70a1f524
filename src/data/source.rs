//! Split files of a dataset folder, and reading them with parquet + arrow.
//!
//! Split `NAME` of a folder is, first match wins: `NAME.parquet`,
//! `data/NAME-*.parquet` (the hub's layout), `NAME/*.parquet`; for a hub
//! config `C` other than `default`, the same under `C/` first. Several
//! files are read in name order.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::error::DataError;

/// The parquet files of one split, in read order.
pub fn split_files(
    dir: &Path,
    id: &str,
    split: &str,
    config: Option<&str>,
) -> Result<Vec<PathBuf>, DataError> {
    let mut roots = Vec::new();
    if let Some(config) = config.filter(|c| *c != "default") {
        roots.push(dir.join(config));
    }
    roots.push(dir.to_path_buf());
    for root in &roots {
        let single = root.join(format!("{split}.parquet"));
        if single.is_file() {
            return Ok(vec![single]);
        }
        let prefix = format!("{split}-");
        let sharded = parquet_files(&root.join("data"), |name| name.starts_with(&prefix));
        if !sharded.is_empty() {
            return Ok(sharded);
        }
        let folder = parquet_files(&root.join(split), |_| true);
        if !folder.is_empty() {
            return Ok(folder);
        }
    }
    Err(DataError::SplitNotFound {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        split: split.to_string(),
        available: available_splits(dir),
    })
}

/// `*.parquet` files directly in `dir` whose name passes `keep`, sorted.
fn parquet_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    files
}

/// Split names present in a folder, for the "splits found" hint.
fn available_splits(dir: &Path) -> Vec<String> {
    let stem = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).map(str::to_string);
    let mut names: Vec<String> = parquet_files(dir, |_| true)
        .iter()
        .filter_map(stem)
        .collect();
    for file in parquet_files(&dir.join("data"), |_| true) {
        if let Some(name) = stem(&file) {
            names.push(name.split('-').next().unwrap_or(&name).to_string());
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let is_split_dir = path.is_dir() && !parquet_files(&path, |_| true).is_empty();
            if is_split_dir && path.file_name().is_some_and(|n| n != "data") {
                names.extend(
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .map(str::to_string),
                );
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Read `file`, keeping the columns `select` picks from its schema.
pub fn read_parquet(
    file: &Path,
    select: impl Fn(&Schema) -> Result<Vec<String>, DataError>,
) -> Result<Vec<RecordBatch>, DataError> {
    let parquet_error = |message: String| DataError::Parquet {
        path: file.to_path_buf(),
        message,
    };
    let handle = File::open(file).map_err(|source| DataError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
        .map_err(|e| parquet_error(e.to_string()))?;
    let schema = builder.schema().clone();
    let wanted = select(&schema)?;
    let indices: Vec<usize> = wanted
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| parquet_error(e.to_string()))?;
    reader
        .map(|batch| batch.map_err(|e| parquet_error(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_layout_shards_are_found_in_order_and_prefixes_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        for name in [
            "train-00001-of-00002.parquet",
            "train-00000-of-00002.parquet",
            "train_sft-00000-of-00001.parquet",
        ] {
            std::fs::write(data.join(name), b"").expect("write");
        }
        let files = split_files(dir.path(), "x", "train", None).expect("found");
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "train-00000-of-00002.parquet",
                "train-00001-of-00002.parquet"
            ]
        );
        let err = split_files(dir.path(), "x", "test", None).expect_err("no test split");
        let text = err.to_string();
        assert!(
            text.contains("no split `test`") && text.contains("train, train_sft"),
            "{text}"
        );
    }
}
