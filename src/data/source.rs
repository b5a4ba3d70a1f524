//! Split files of a dataset folder, and reading them with parquet + arrow.
//!
//! Split `NAME` of a folder is, first match wins: the files the dataset
//! card (`README.md`) gives for it in its `configs:` (see `card`),
//! `NAME.parquet`,
//! `data/NAME-*.parquet` (the hub's layout), `NAME-*.parquet`,
//! `NAME/*.parquet`; for a hub config `C` other than `default`, the same
//! under `C/` first (the hub's `C/NAME-*.parquet`). Several files are read
//! in name order.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::card::{glob_match, split_patterns};
use super::error::DataError;

/// The parquet files of one split, in read order.
pub fn split_files(
    dir: &Path,
    id: &str,
    split: &str,
    config: Option<&str>,
) -> Result<Vec<PathBuf>, DataError> {
    let card = std::fs::read_to_string(dir.join("README.md")).ok();
    let found = split_paths(&relative_files(dir), split, config, card.as_deref());
    if !found.is_empty() {
        return Ok(found.iter().map(|rel| dir.join(rel)).collect());
    }
    Err(DataError::SplitNotFound {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        split: split.to_string(),
        available: available_splits(dir),
    })
}

/// The files of split `split` among `paths` (relative, `/`-separated, as
/// a folder holds them or as the hub lists a dataset repo), sorted: the
/// layout rules of this module's doc, written once so that a download
/// fetches exactly the files a read will pick.
pub fn split_paths(
    paths: &[String],
    split: &str,
    config: Option<&str>,
    card: Option<&str>,
) -> Vec<String> {
    if let Some(patterns) = card.and_then(|text| split_patterns(text, config, split)) {
        let mut files: Vec<String> = paths
            .iter()
            .filter(|p| p.ends_with(".parquet") && patterns.iter().any(|g| glob_match(g, p)))
            .cloned()
            .collect();
        files.sort();
        if !files.is_empty() {
            return files;
        }
    }
    let mut roots = Vec::new();
    if let Some(config) = config.filter(|c| *c != "default") {
        roots.push(format!("{config}/"));
    }
    roots.push(String::new());
    let parquet_in = |folder: &str, keep: &dyn Fn(&str) -> bool| {
        let mut files: Vec<String> = paths
            .iter()
            .filter(|p| p.ends_with(".parquet"))
            .filter(|p| {
                p.strip_prefix(folder)
                    .is_some_and(|name| !name.contains('/') && keep(name))
            })
            .cloned()
            .collect();
        files.sort();
        files
    };
    let prefix = format!("{split}-");
    let single = format!("{split}.parquet");
    for root in &roots {
        let found = [
            parquet_in(root, &|name| name == single),
            parquet_in(&format!("{root}data/"), &|name| name.starts_with(&prefix)),
            parquet_in(root, &|name| name.starts_with(&prefix)),
            parquet_in(&format!("{root}{split}/"), &|_| true),
        ];
        if let Some(files) = found.into_iter().find(|f| !f.is_empty()) {
            return files;
        }
    }
    Vec::new()
}

/// Files under `dir` as relative `/`-separated paths, three levels deep
/// (`CONFIG/data/FILE` is the deepest layout read); links are followed, as
/// the hub cache's snapshot files are links to its blobs.
fn relative_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = entry.path();
            if path.is_file() {
                out.push(format!("{prefix}{name}"));
            } else if path.is_dir() && depth > 1 {
                walk(&path, &format!("{prefix}{name}/"), depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", 3, &mut out);
    out
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

    #[test]
    fn split_paths_picks_a_config_first_and_only_the_split_asked() {
        let listed: Vec<String> = [
            "README.md",
            "data/train-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet",
            "other/data/train-00000-of-00001.parquet",
            "third/train-00000-of-00001.parquet",
            "data/train_gen-00000-of-00001.parquet",
        ]
        .map(str::to_string)
        .to_vec();
        assert_eq!(
            split_paths(&listed, "train", None, None),
            ["data/train-00000-of-00001.parquet"]
        );
        assert_eq!(
            split_paths(&listed, "train", Some("other"), None),
            ["other/data/train-00000-of-00001.parquet"]
        );
        assert_eq!(
            split_paths(&listed, "test", Some("other"), None),
            ["data/test-00000-of-00001.parquet"]
        );
        assert_eq!(
            split_paths(&listed, "train", Some("third"), None),
            ["third/train-00000-of-00001.parquet"]
        );
        assert!(split_paths(&listed, "validation", None, None).is_empty());
        let card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: validation\n    path: other/data/train-*\n---\n";
        assert_eq!(
            split_paths(&listed, "validation", None, Some(card)),
            ["other/data/train-00000-of-00001.parquet"]
        );
    }
}
