//! One repo on the hub: its file list and its files' downloads, through
//! `hf-hub`'s blocking client, which already does what the Python stack's
//! cache does: `blobs/<etag>` written through a `.part` file that a later
//! run resumes with a `Range` request, `snapshots/<commit>/<file>` links to
//! the blobs, `refs/<revision>` naming the commit, a lock per blob, and
//! the hub's redirect of large files to its content store. What is added
//! here: the file list with sizes, and readable errors.

use std::path::PathBuf;

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo};
use serde::Deserialize;

use super::RepoKind;
use super::error::HubError;
use super::settings::HubSettings;

/// A file of the repo as the hub lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteFile {
    #[serde(rename = "rfilename")]
    pub path: String,
    /// Bytes, when the hub says (it does when asked for `blobs`).
    #[serde(default)]
    pub size: Option<u64>,
}

/// The repo at one revision: its commit and files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Listing {
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<RemoteFile>,
}

impl Listing {
    /// Every path, in the hub's order.
    pub fn paths(&self) -> Vec<String> {
        self.siblings.iter().map(|f| f.path.clone()).collect()
    }

    /// The size of `path`, if listed with one.
    pub fn size_of(&self, path: &str) -> Option<u64> {
        self.siblings
            .iter()
            .find(|f| f.path == path)
            .and_then(|f| f.size)
    }
}

/// A repo id of some kind at some revision, with its cache folder.
pub struct RemoteRepo {
    what: &'static str,
    id: String,
    endpoint: String,
    has_token: bool,
    token: Option<String>,
    revision: String,
    folder: PathBuf,
    api: ApiRepo,
    cache: CacheRepo,
}

impl RemoteRepo {
    /// A client for `id` (nothing is requested yet).
    pub fn new(
        settings: &HubSettings,
        id: &str,
        kind: RepoKind,
        revision: &str,
    ) -> Result<Self, HubError> {
        let repo = Repo::with_revision(id.to_string(), kind.repo_type(), revision.to_string());
        let cache = Cache::new(settings.cache_dir.clone());
        let api = ApiBuilder::from_cache(cache.clone())
            .with_endpoint(settings.endpoint.clone())
            .with_token(settings.token.clone())
            .with_progress(false)
            .with_retries(2)
            .with_user_agent("align", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Download {
                what: kind.noun(),
                id: id.to_string(),
                file: None,
                message: e.to_string(),
            })?;
        Ok(Self {
            what: kind.noun(),
            id: id.to_string(),
            endpoint: settings.endpoint.clone(),
            has_token: settings.token.is_some(),
            token: settings.token.clone(),
            revision: revision.to_string(),
            folder: settings.cache_dir.join(repo.folder_name()),
            api: api.repo(repo.clone()),
            cache: cache.repo(repo),
        })
    }

    /// The commit the revision points to and its files with their sizes
    /// (`GET /api/<models|datasets>/<id>/revision/<rev>?blobs=true`).
    pub fn list(&self) -> Result<Listing, HubError> {
        let response = self
            .api
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| self.request_error(e, None))?;
        response.into_json().map_err(|e| HubError::Download {
            what: self.what,
            id: self.id.clone(),
            file: None,
            message: format!("the hub's file list does not parse: {e}"),
        })
    }

    /// `file` in the cache at this revision, if it is there.
    pub fn cached(&self, file: &str) -> Option<PathBuf> {
        self.cache.get(file)
    }

    /// Downloads `file` into the cache (resuming a `.part` file left by an
    /// interrupted run) and returns its snapshot path.
    pub fn download(&self, file: &str, progress: impl Progress) -> Result<PathBuf, HubError> {
        self.api
            .download_with_progress(file, progress)
            .map_err(|e| self.api_error(e, file))
    }

    /// A small file's text, read without writing it to the cache.
    pub fn read_text(&self, file: &str) -> Result<String, HubError> {
        let mut request = ureq::get(&self.api.url(file));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = request
            .call()
            .map_err(|e| self.request_error(e, Some(file)))?;
        response.into_string().map_err(|e| HubError::Download {
            what: self.what,
            id: self.id.clone(),
            file: Some(file.to_string()),
            message: e.to_string(),
        })
    }

    fn api_error(&self, error: ApiError, file: &str) -> HubError {
        match error {
            ApiError::RequestError(e) => self.request_error(*e, Some(file)),
            ApiError::TooManyRetries(inner) => self.api_error(*inner, file),
            ApiError::LockAcquisition(path) => HubError::Locked { path },
            ApiError::IoError(source) => HubError::Cache {
                path: self.cache_folder(),
                source,
            },
            other => HubError::Download {
                what: self.what,
                id: self.id.clone(),
                file: Some(file.to_string()),
                message: other.to_string(),
            },
        }
    }

    /// A refused or failed request, read with the hub's `X-Error-Code`.
    fn request_error(&self, error: ureq::Error, file: Option<&str>) -> HubError {
        let (what, id) = (self.what, self.id.clone());
        let response = match error {
            ureq::Error::Status(_, response) => response,
            ureq::Error::Transport(transport) => {
                return HubError::Network {
                    what,
                    id,
                    endpoint: self.endpoint.clone(),
                    cache: self.folder.clone(),
                    message: transport.to_string(),
                };
            }
        };
        let status = response.status();
        let code = response.header("X-Error-Code").unwrap_or("").to_string();
        let revision = self.revision.clone();
        let message = response
            .into_json::<serde_json::Value>()
            .ok()
            .and_then(|body| body.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| code.clone());
        match (code.as_str(), status) {
            ("GatedRepo", _) => HubError::Gated {
                what,
                page: page(&self.endpoint, &id, what),
                id,
                has_token: self.has_token,
            },
            ("RepoNotFound", _) | (_, 404) if file.is_none() || code == "RepoNotFound" => {
                HubError::RepoNotFound {
                    what,
                    id,
                    endpoint: self.endpoint.clone(),
                    has_token: self.has_token,
                }
            }
            ("RevisionNotFound", _) => HubError::RevisionNotFound { what, id, revision },
            ("EntryNotFound", _) | (_, 404) => HubError::FileNotFound {
                what,
                id,
                file: file.unwrap_or_default().to_string(),
            },
            (_, 401) if self.has_token => HubError::BadToken { what, id, status },
            (_, 401) => HubError::RepoNotFound {
                what,
                id,
                endpoint: self.endpoint.clone(),
                has_token: false,
            },
            _ => HubError::Http {
                what,
                id,
                file: file.map(str::to_string),
                status,
                message,
            },
        }
    }

    /// This repo's folder in the cache (`models--org--name`).
    pub fn cache_folder(&self) -> PathBuf {
        self.folder.clone()
    }
}

/// The repo's page on the hub, where a gated repo's license is accepted.
fn page(endpoint: &str, id: &str, what: &str) -> String {
    match what {
        "dataset" => format!("{endpoint}/datasets/{id}"),
        _ => format!("{endpoint}/{id}"),
    }
}
