//! `hf:ORG/NAME[@REV]`: model files through the Hugging Face hub cache.
//!
//! Files already in the cache (`$HF_HOME/hub`, as the Python client lays it out) are used
//! as they are. Missing files are downloaded unless `HF_HUB_OFFLINE=1`; when the hub cannot
//! be reached the error says so and how to work offline.

use crate::{ModelError, Result};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

fn hub_err(repo: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Fetch {
        what: format!("hf:{repo}"),
        reason: reason.into(),
    }
}

fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes")
    )
}

/// Make sure config, tokenizer and weights of `spec` (`ORG/NAME[@REV]`) are in the cache;
/// returns the snapshot directory that holds them.
pub fn snapshot(spec: &str, say: &dyn Fn(&str)) -> Result<PathBuf> {
    let (id, rev) = match spec.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (spec, "main"),
    };
    check_repo_spec(id, rev).map_err(|reason| hub_err(spec, reason))?;
    let repo = Repo::with_revision(id.to_string(), RepoType::Model, rev.to_string());
    let fetcher = Fetcher::new(spec, repo, say);
    let config = fetcher
        .get("config.json", true)?
        .ok_or_else(|| hub_err(spec, "no config.json"))?;
    fetcher.get("tokenizer.json", false)?;
    fetcher.get("tokenizer_config.json", false)?;
    match fetcher.get("model.safetensors.index.json", false)? {
        Some(index) => {
            for shard in crate::source::safetensors_files(parent(&index))? {
                let name = shard
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                fetcher.get(&name, true)?;
            }
        }
        None => {
            fetcher.get("model.safetensors", true)?;
        }
    }
    Ok(parent(&config).to_path_buf())
}

/// `ORG/NAME` of letters, digits, `-`, `_`, `.` (at most 96 each, no `..`), and a
/// revision without whitespace, control characters or `..`: these become cache paths.
fn check_repo_spec(id: &str, rev: &str) -> std::result::Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "`{id}` is not ORG/NAME (letters, digits, `-`, `_`, `.`); expected \
             hf:ORG/NAME[@REVISION]"
        ));
    }
    let rev_ok = !rev.is_empty()
        && rev.len() <= 256
        && !rev.contains("..")
        && !rev.chars().any(|c| c.is_whitespace() || c.is_control());
    if !rev_ok {
        return Err(format!("revision `{rev}` is not a branch, tag or commit"));
    }
    Ok(())
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(p)
}

struct Fetcher<'a> {
    spec: &'a str,
    repo: Repo,
    cache: Cache,
    say: &'a dyn Fn(&str),
}

impl<'a> Fetcher<'a> {
    fn new(spec: &'a str, repo: Repo, say: &'a dyn Fn(&str)) -> Self {
        Self {
            spec,
            repo,
            cache: Cache::from_env(),
            say,
        }
    }

    /// The cached file, downloading it when allowed. `Ok(None)`: optional and absent.
    fn get(&self, file: &str, required: bool) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cache.repo(self.repo.clone()).get(file) {
            return Ok(Some(p));
        }
        if offline() {
            return match required {
                true => Err(hub_err(
                    self.spec,
                    format!(
                        "{file} is not in the cache ({}) and HF_HUB_OFFLINE is set",
                        self.cache.path().display()
                    ),
                )),
                false => Ok(None),
            };
        }
        (self.say)(&format!("downloading {file} from hf:{}", self.spec));
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .build()
            .map_err(|e| hub_err(self.spec, format!("cannot start the hub client: {e}")))?;
        match api.repo(self.repo.clone()).get(file) {
            Ok(p) => Ok(Some(p)),
            Err(e) if !required && e.to_string().contains("404") => Ok(None),
            Err(e) => Err(hub_err(
                self.spec,
                format!("cannot download {file}: {e} (is the hub reachable? set HF_HUB_OFFLINE=1 to use only the cache)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_specs_that_could_escape_the_cache_are_rejected() {
        assert!(check_repo_spec("HuggingFaceTB/SmolLM2-135M", "main").is_ok());
        assert!(check_repo_spec("Qwen/Qwen2.5-0.5B", "a1b2c3").is_ok());
        for id in ["a", "a/b/c", "../x", "a/..", "/a", "a/", "a b/c", "a/b\\c"] {
            assert!(check_repo_spec(id, "main").is_err(), "{id}");
        }
        for rev in ["", "..", "x y", "a\nb"] {
            assert!(check_repo_spec("a/b", rev).is_err(), "{rev:?}");
        }
    }
}
