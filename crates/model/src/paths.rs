//! Where the project keeps downloaded models and test fixtures.
//!
//! The cache directory is `$ENGINE_CACHE_DIR` when set, else `$XDG_CACHE_HOME/engine`,
//! else `$HOME/.cache/engine`, else `.cache/engine` under the current directory.

use std::path::PathBuf;

/// The project's cache directory (models under `models/`, test fixtures under `fixtures/`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENGINE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("engine");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("engine");
    }
    PathBuf::from(".cache").join("engine")
}
