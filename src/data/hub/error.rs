//! What can stop a download, each said with the repo (and file) it concerns
//! and what the user can do about it. The hub answers a refused request
//! with a status and an `X-Error-Code` header (`GatedRepo`,
//! `RepoNotFound`, `EntryNotFound`, `RevisionNotFound`); those are read
//! here, since `hf-hub` passes them on as bare HTTP errors.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong between a repo id and its cached files.
#[derive(Debug, Error)]
pub enum HubError {
    #[error(
        "{what} `{id}` is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: run `align download RECIPE` where the hub is reachable, or unset HF_HUB_OFFLINE",
        cache.display()
    )]
    Offline {
        what: &'static str,
        id: String,
        cache: PathBuf,
    },

    #[error(
        "{what} `{id}` is gated: {}",
        match has_token {
            true => format!("the account of HF_TOKEN has not been granted access; accept the license at {page} with that account and try again"),
            false => format!("accept its license at {page}, then set HF_TOKEN to an access token of that account (or run `hf auth login`, which writes the token file)"),
        }
    )]
    Gated {
        what: &'static str,
        id: String,
        page: String,
        has_token: bool,
    },

    #[error(
        "{what} `{id}` not found on {endpoint}: check the id{}",
        match has_token {
            true => "; if the repo is private, the account of HF_TOKEN cannot see it",
            false => "; if the repo is private, set HF_TOKEN to an access token that can read it",
        }
    )]
    RepoNotFound {
        what: &'static str,
        id: String,
        endpoint: String,
        has_token: bool,
    },

    #[error(
        "{what} `{id}`: HF_TOKEN was refused ({status}): make a new access token and set HF_TOKEN to it"
    )]
    BadToken {
        what: &'static str,
        id: String,
        status: u16,
    },

    #[error("{what} `{id}`: no revision `{revision}` on the hub: check `model_revision`")]
    RevisionNotFound {
        what: &'static str,
        id: String,
        revision: String,
    },

    #[error("{what} `{id}`: the hub has no file `{file}` although it lists it; try again later")]
    FileNotFound {
        what: &'static str,
        id: String,
        file: String,
    },

    #[error(
        "model `{id}` has no safetensors weights (model.safetensors or model-*-of-*.safetensors){}; files found: {}",
        match found.iter().any(|f| f.ends_with(".bin") || f.ends_with(".pth") || f.ends_with(".pt")) {
            true => ": its pickled weights (.bin/.pth) are never loaded; convert them to safetensors and name that folder",
            false => "",
        },
        list_text(found)
    )]
    NoWeights { id: String, found: Vec<String> },

    #[error(
        "dataset `{id}`{}: no parquet files for split `{split}` (looked for {split}.parquet, data/{split}-*.parquet, {split}-*.parquet, {split}/*.parquet); files found: {}",
        config.as_ref().map(|c| format!(" (config `{c}`)")).unwrap_or_default(),
        list_text(found)
    )]
    NoSplit {
        id: String,
        config: Option<String>,
        split: String,
        found: Vec<String>,
    },

    #[error(
        "{what} `{id}` is not in the cache ({}) and {endpoint} cannot be reached ({message}): check the network or HF_ENDPOINT, or fill the cache with `align download RECIPE` on a machine that reaches the hub",
        cache.display()
    )]
    Network {
        what: &'static str,
        id: String,
        endpoint: String,
        cache: PathBuf,
        message: String,
    },

    #[error(
        "{what} `{id}`{}: the hub answered {status}: {message}",
        file_text(file)
    )]
    Http {
        what: &'static str,
        id: String,
        file: Option<String>,
        status: u16,
        message: String,
    },

    #[error(
        "{}: another process is downloading this file; wait for it to finish, or delete this lock file if none is",
        path.display()
    )]
    Locked { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} `{id}`{}: {message}", file_text(file))]
    Download {
        what: &'static str,
        id: String,
        file: Option<String>,
        message: String,
    },
}

fn file_text(file: &Option<String>) -> String {
    file.as_ref()
        .map(|f| format!(" file `{f}`"))
        .unwrap_or_default()
}

fn list_text(items: &[String]) -> String {
    match items.is_empty() {
        true => "none".into(),
        false => items.join(", "),
    }
}
