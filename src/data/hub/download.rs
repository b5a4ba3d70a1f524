//! A recipe's repos made local before any stage runs: each id goes through
//! the lookup (a folder, `ALIGN_DATA_DIR`, the cache) and is fetched from
//! the hub only when the lookup misses it or finds a cache snapshot that a
//! stopped download left incomplete. `HF_HUB_OFFLINE` turns a miss into
//! an error that says how to fill the cache. `align download` runs this
//! alone (or, with `--dry-run`, only lists what it would fetch); `align
//! train|sft|dpo|eval` run it first.

use std::fmt;
use std::path::PathBuf;

use indicatif::HumanBytes;

use crate::recipe::StageConfig;

use super::error::HubError;
use super::progress::{Display, FileProgress};
use super::remote::RemoteRepo;
use super::settings::HubSettings;
use super::wanted::{RepoNeed, files_to_fetch, is_complete, needs_of};
use super::{Found, RepoKind, lookup};

/// What became of one repo.
#[derive(Debug, Clone, PartialEq)]
pub enum RepoStatus {
    /// A folder of the user's (a path, or under `ALIGN_DATA_DIR`).
    Local(PathBuf),
    /// Already complete in the cache.
    Cached(PathBuf),
    /// Fetched now: the snapshot folder and the files downloaded.
    Fetched {
        dir: PathBuf,
        files: Vec<(String, Option<u64>)>,
    },
    /// `--dry-run`: the files a download would fetch.
    WouldFetch { files: Vec<(String, Option<u64>)> },
}

/// One line per repo of the recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadReport {
    pub repos: Vec<(RepoNeed, RepoStatus)>,
}

impl DownloadReport {
    /// Bytes fetched (or, in a dry run, to fetch), as far as the hub said.
    pub fn bytes(&self) -> u64 {
        self.repos
            .iter()
            .flat_map(|(_, status)| match status {
                RepoStatus::Fetched { files, .. } | RepoStatus::WouldFetch { files } => {
                    files.as_slice()
                }
                _ => &[][..],
            })
            .filter_map(|(_, size)| *size)
            .sum()
    }
}

/// Makes every hub repo `stages` read local; `dry_run` only lists.
pub fn download_recipe(
    stages: &[StageConfig],
    settings: &HubSettings,
    display: Display,
    dry_run: bool,
) -> Result<DownloadReport, HubError> {
    let mut repos = Vec::new();
    for need in needs_of(stages) {
        let status = make_local(&need, settings, display, dry_run)?;
        repos.push((need, status));
    }
    Ok(DownloadReport { repos })
}

/// One repo: the lookup first, then the hub.
pub fn make_local(
    need: &RepoNeed,
    settings: &HubSettings,
    display: Display,
    dry_run: bool,
) -> Result<RepoStatus, HubError> {
    let found = lookup(&need.id, need.kind, &settings.cache_dir);
    match found {
        Found::Local(dir) => return Ok(RepoStatus::Local(dir)),
        Found::Cached(dir) if is_complete(need, &dir) => return Ok(RepoStatus::Cached(dir)),
        _ => {}
    }
    if settings.offline {
        return Err(HubError::Offline {
            what: need.kind.noun(),
            id: need.id.clone(),
            cache: settings.cache_dir.clone(),
        });
    }
    if need.revision != "main" {
        // The stages look up `refs/main`; another revision would download
        // into the cache and then not be found.
        return Err(HubError::Download {
            what: need.kind.noun(),
            id: need.id.clone(),
            file: None,
            message: format!(
                "model_revision `{}`: only `main` is downloaded; put that revision in a folder and name the folder in model_name_or_path",
                need.revision
            ),
        });
    }
    let remote = RemoteRepo::new(settings, &need.id, need.kind, &need.revision)?;
    let listing = remote.list()?;
    let paths = listing.paths();
    let card = match need.kind == RepoKind::Dataset && paths.iter().any(|p| p == "README.md") {
        true => Some(read_card(&remote, display, dry_run)?),
        false => None,
    };
    let wanted = files_to_fetch(need, &paths, card.as_deref())?;
    let missing: Vec<(String, Option<u64>)> = wanted
        .into_iter()
        .filter(|file| remote.cached(file).is_none())
        .map(|file| {
            let size = listing.size_of(&file);
            (file, size)
        })
        .collect();
    if dry_run {
        return Ok(RepoStatus::WouldFetch { files: missing });
    }
    for (file, _) in &missing {
        let label = format!("{}/{file}", need.id);
        remote.download(file, FileProgress::new(display, label))?;
    }
    let dir = match lookup(&need.id, need.kind, &settings.cache_dir) {
        Found::Cached(dir) | Found::Local(dir) => dir,
        Found::Missing(_) => remote.cache_folder(),
    };
    Ok(RepoStatus::Fetched {
        dir,
        files: missing,
    })
}

/// A dataset's README.md: from the cache, else downloaded into it (a dry
/// run reads it without keeping it).
fn read_card(remote: &RemoteRepo, display: Display, dry_run: bool) -> Result<String, HubError> {
    let path = match (remote.cached("README.md"), dry_run) {
        (Some(path), _) => path,
        (None, true) => return remote.read_text("README.md"),
        (None, false) => {
            remote.download("README.md", FileProgress::new(display, "README.md".into()))?
        }
    };
    std::fs::read_to_string(&path).map_err(|source| HubError::Cache { path, source })
}

impl fmt::Display for DownloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (need, status) in &self.repos {
            let name = format!("{} `{}`", need.kind.noun(), need.id);
            match status {
                RepoStatus::Local(dir) => writeln!(f, "{name}: local folder {}", dir.display())?,
                RepoStatus::Cached(dir) => writeln!(f, "{name}: cached in {}", dir.display())?,
                RepoStatus::Fetched { dir, files } => writeln!(
                    f,
                    "{name}: downloaded {} file(s), {} into {}",
                    files.len(),
                    HumanBytes(files.iter().filter_map(|(_, s)| *s).sum()),
                    dir.display()
                )?,
                RepoStatus::WouldFetch { files } if files.is_empty() => {
                    writeln!(f, "{name}: nothing to download")?
                }
                RepoStatus::WouldFetch { files } => {
                    writeln!(f, "{name}: would download {} file(s):", files.len())?;
                    for (file, size) in files {
                        let size = size.map(|s| HumanBytes(s).to_string());
                        writeln!(
                            f,
                            "  {file} ({})",
                            size.as_deref().unwrap_or("size unknown")
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
