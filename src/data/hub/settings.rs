//! How to reach the hub, read once from the environment with the variable
//! names of Python's `huggingface_hub`, so that a machine set up for the
//! Python stack downloads the same way: `HF_ENDPOINT`, `HF_HUB_CACHE` /
//! `HF_HOME`, `HF_TOKEN` (else the token file `huggingface-cli login`
//! writes, `HF_HOME/token`) and `HF_HUB_OFFLINE`. `hf-hub` reads only some
//! of these, so the whole set is gathered here and handed to it.

use std::path::PathBuf;

use hf_hub::Cache;

/// The hub's public address, when `HF_ENDPOINT` does not name another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything a download needs to know besides what to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The cache root (`.../hub`), where `models--org--name/` folders live.
    pub cache_dir: PathBuf,
    /// Sent as `Authorization: Bearer`; gated and private repos need it.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: never reach the network, use what is cached.
    pub offline: bool,
}

impl HubSettings {
    /// The settings the environment gives.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = var("HF_TOKEN")
            .map(|t| t.trim().to_string())
            .or_else(|| Cache::from_env().token());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir: super::hub_cache().path().clone(),
            token,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
        }
    }
}

/// `huggingface_hub`'s reading of a boolean variable.
pub fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_values_are_read_as_python_reads_them() {
        for yes in ["1", "ON", "yes", "True"] {
            assert!(is_true(yes), "{yes}");
        }
        for no in ["0", "off", "no", "false", ""] {
            assert!(!is_true(no), "{no}");
        }
    }
}
