//! Dataset and model ids to local folders, offline.
//!
//! In order: a folder of that name (the recipe already resolved relative
//! names, see `recipe::paths`), `ALIGN_DATA_DIR/<id>`, then the Hugging
//! Face hub cache in Python's layout (`HF_HUB_CACHE`, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), at the revision `refs/main` points to.
//! Nothing is downloaded.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::error::DataError;

/// What an id names: the hub keeps models and datasets apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

/// The local folder holding `id`, or an error listing where it was sought.
pub fn resolve(id: &str, kind: RepoKind) -> Result<PathBuf, DataError> {
    let mut tried = Vec::new();
    let direct = PathBuf::from(id);
    if direct.is_dir() {
        return Ok(direct);
    }
    tried.push(direct);
    if let Some(root) = std::env::var_os("ALIGN_DATA_DIR") {
        let candidate = Path::new(&root).join(id);
        if candidate.is_dir() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    let (found, repo_dir) = hub_snapshot(hub_cache().path(), id, kind);
    if let Some(snapshot) = found {
        return Ok(snapshot);
    }
    tried.push(repo_dir);
    Err(DataError::NotFound {
        what: kind.noun(),
        id: id.to_string(),
        tried,
    })
}

/// The hub cache root, honouring `HF_HUB_CACHE` (which `hf_hub::Cache`
/// does not read) before `HF_HOME`.
fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(PathBuf::from(dir)),
        None => Cache::from_env(),
    }
}

/// `(snapshot folder if cached, repo folder looked at)` under `cache_root`:
/// `<root>/datasets--org--name/refs/main` holds the commit whose files are
/// in `snapshots/<commit>/`.
fn hub_snapshot(cache_root: &Path, id: &str, kind: RepoKind) -> (Option<PathBuf>, PathBuf) {
    let repo_type = match kind {
        RepoKind::Model => RepoType::Model,
        RepoKind::Dataset => RepoType::Dataset,
    };
    let repo = Repo::new(id.to_string(), repo_type);
    let repo_dir = cache_root.join(repo.folder_name());
    let snapshot = std::fs::read_to_string(repo_dir.join("refs").join(repo.revision()))
        .ok()
        .map(|hash| repo_dir.join("snapshots").join(hash.trim()))
        .filter(|dir| dir.is_dir());
    (snapshot, repo_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_folder_is_used_as_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = dir.path().to_string_lossy().into_owned();
        assert_eq!(resolve(&id, RepoKind::Dataset).expect("found"), dir.path());
    }

    #[test]
    fn the_hub_cache_layout_resolves_to_the_main_snapshot() {
        let cache = tempfile::tempdir().expect("tempdir");
        let repo = cache.path().join("datasets--argilla--dpo-mix-7k");
        std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
        std::fs::create_dir_all(repo.join("snapshots/abc123/data")).expect("mkdir");
        std::fs::write(repo.join("refs/main"), "abc123\n").expect("write");
        let (found, _) = hub_snapshot(cache.path(), "argilla/dpo-mix-7k", RepoKind::Dataset);
        assert_eq!(found, Some(repo.join("snapshots/abc123")));
        let (model, _) = hub_snapshot(cache.path(), "argilla/dpo-mix-7k", RepoKind::Model);
        assert_eq!(model, None, "models live under models--");
    }

    #[test]
    fn a_missing_id_lists_where_it_was_sought() {
        let err = resolve("no-such-org/no-such-dataset-xyz", RepoKind::Dataset)
            .expect_err("must not be found");
        let text = err.to_string();
        assert!(
            text.contains("dataset `no-such-org/no-such-dataset-xyz` not found"),
            "{text}"
        );
        assert!(
            text.contains("datasets--no-such-org--no-such-dataset-xyz"),
            "{text}"
        );
    }
}
