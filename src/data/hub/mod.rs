//! Dataset and model ids to local folders, and the downloads that fill the
//! Hugging Face cache when an id is in none of them.
//!
//! Lookup, in order: a folder of that name (the recipe already resolved
//! relative names, see `recipe::paths`), `ALIGN_DATA_DIR/<id>`, then the
//! Hugging Face hub cache in Python's layout (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`), at the revision
//! `refs/main` points to. [`resolve`] only looks; [`download`] fetches what
//! a recipe names and the lookup misses, before any stage runs, so that
//! training itself never waits on the network.
//!
//! - [`settings`]: endpoint, cache, token and offline mode from the environment.
//! - [`wanted`]: which repos and files a recipe needs.
//! - [`remote`]: the hub's file list and downloads (`hf-hub`'s blocking client).
//! - [`progress`]: a bar per file, or plain lines.
//! - [`download`]: lookup first, then the hub, for a whole recipe.
//! - [`error`]: [`HubError`], naming the repo and what to do.

pub mod download;
pub mod error;
pub mod progress;
pub mod remote;
pub mod settings;
pub mod wanted;

pub use download::{DownloadReport, download_recipe};
pub use error::HubError;
pub use settings::HubSettings;

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
    /// "model" or "dataset", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// The kind as `hf-hub` names it.
    pub fn repo_type(self) -> RepoType {
        match self {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        }
    }
}

/// Where the lookup found an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// A folder the user made: used as it is, never completed from the hub.
    Local(PathBuf),
    /// A snapshot of the hub cache: a download may have stopped half way.
    Cached(PathBuf),
    /// Nowhere; the places looked at, the cache's repo folder last.
    Missing(Vec<PathBuf>),
}

/// The local folder holding `id`, or an error listing where it was sought.
pub fn resolve(id: &str, kind: RepoKind) -> Result<PathBuf, DataError> {
    match lookup(id, kind, hub_cache().path()) {
        Found::Local(dir) | Found::Cached(dir) => Ok(dir),
        Found::Missing(tried) => Err(DataError::NotFound {
            what: kind.noun(),
            id: id.to_string(),
            tried,
        }),
    }
}

/// The lookup order of this module's doc, with `cache_root` as the cache.
pub fn lookup(id: &str, kind: RepoKind, cache_root: &Path) -> Found {
    let mut tried = Vec::new();
    let direct = PathBuf::from(id);
    if direct.is_dir() {
        return Found::Local(direct);
    }
    tried.push(direct);
    if let Some(root) = std::env::var_os("ALIGN_DATA_DIR") {
        let candidate = Path::new(&root).join(id);
        if candidate.is_dir() {
            return Found::Local(candidate);
        }
        tried.push(candidate);
    }
    let (found, repo_dir) = hub_snapshot(cache_root, id, kind);
    if let Some(snapshot) = found {
        return Found::Cached(snapshot);
    }
    tried.push(repo_dir);
    Found::Missing(tried)
}

/// The hub cache root, honouring `HF_HUB_CACHE` (which `hf_hub::Cache`
/// does not read) before `HF_HOME`.
pub fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(PathBuf::from(dir)),
        None => Cache::from_env(),
    }
}

/// `(snapshot folder if cached, repo folder looked at)` under `cache_root`:
/// `<root>/datasets--org--name/refs/main` holds the commit whose files are
/// in `snapshots/<commit>/`.
fn hub_snapshot(cache_root: &Path, id: &str, kind: RepoKind) -> (Option<PathBuf>, PathBuf) {
    let repo = Repo::new(id.to_string(), kind.repo_type());
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
