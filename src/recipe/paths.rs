//! Relative paths in a config.
//!
//! The handbook resolves every path against the current directory. Recipes
//! shipped with their model and data (the fixture's `recipe_*.yaml` say
//! "paths relative to this folder") need the config's folder instead. Rule:
//! a relative input path that exists next to the config file resolves
//! there; otherwise it stays as written, i.e. relative to the current
//! directory, or a hub id.
//!
//! The config's folder is tried first, not the current directory, because
//! short names collide: the fixture's dataset id `data` must not pick up a
//! `data/` folder of whatever directory `align` runs in, while a handbook
//! config's `data/zephyr-7b-gemma-sft` does not exist next to the config
//! and so still resolves against the current directory, as in the handbook.
//! Outputs (`output_dir`, `logging_dir`, `resume_from_checkpoint`) always
//! stay relative to the current directory.

use std::path::Path;

/// Resolve one model, tokenizer or dataset reference (see the module doc).
pub fn resolve_input(value: &str, config_dir: &Path) -> String {
    let path = Path::new(value);
    if value.is_empty() || path.is_absolute() {
        return value.to_string();
    }
    let beside_config = config_dir.join(path);
    if beside_config.exists() && config_dir != Path::new(".") {
        beside_config.to_string_lossy().into_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_config_folder_then_keeps_the_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("model_here")).expect("mkdir");
        let resolved = resolve_input("model_here", dir.path());
        assert_eq!(Path::new(&resolved), dir.path().join("model_here"));
        assert_eq!(resolve_input("org/hub-id", dir.path()), "org/hub-id");
        assert_eq!(resolve_input("/abs/path", dir.path()), "/abs/path");
    }
}
