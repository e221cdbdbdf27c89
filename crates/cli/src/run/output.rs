//! Append-only JSONL logs that survive crashes: the results file and the errors file.
//!
//! Each record is serialized to one buffer and written with a single `write_all` to a
//! file opened in append mode, then flushed: after a crash (even SIGKILL) the file holds
//! whole lines plus at most one torn last line. [`JsonlLog::open`] reads an existing file
//! first, hands every complete record to the caller (to collect finished ids or
//! recorded line numbers), and truncates a torn tail: a last line with no newline, or
//! one that is not valid JSON. An invalid line *before* the last is not a tear but a
//! damaged file, and is a fatal error rather than something to silently drop. `fsync`
//! runs every `fsync_every` records and on [`JsonlLog::sync`]; a flushed line already
//! survives the death of the process, `fsync` guards against the machine's.

use anyhow::{bail, Context};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// An append-only JSONL file, created on the first append.
pub struct JsonlLog {
    path: PathBuf,
    file: Option<File>,
    fsync_every: u64,
    unsynced: u64,
}

/// What `open` found in an existing file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Complete records kept.
    pub records: u64,
    /// Bytes of a torn last line that were cut off.
    pub truncated_bytes: u64,
}

impl JsonlLog {
    /// Open `path` for appending. When it exists, call `visit` with each complete record
    /// and cut off a torn last line.
    pub fn open(
        path: &Path,
        fsync_every: u64,
        mut visit: impl FnMut(Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Self, Scan)> {
        let mut scan = Scan::default();
        if path.exists() {
            scan = repair(path, &mut visit)?;
        }
        let log = Self {
            path: path.to_path_buf(),
            file: None,
            fsync_every,
            unsynced: 0,
        };
        Ok((log, scan))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the file now if it does not exist yet.
    pub fn create(&mut self) -> anyhow::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))?;
            self.file = Some(f);
        }
        Ok(())
    }

    /// Append one record as one line, with one write, and flush it.
    pub fn append(&mut self, record: &impl serde::Serialize) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.create()?;
        let Some(f) = self.file.as_mut() else {
            bail!("{} is not open", self.path.display());
        };
        f.write_all(&line)
            .and_then(|()| f.flush())
            .with_context(|| format!("cannot write to {}", self.path.display()))?;
        self.unsynced += 1;
        if self.fsync_every > 0 && self.unsynced >= self.fsync_every {
            self.sync()?;
        }
        Ok(())
    }

    /// fsync what was written.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if let (Some(f), true) = (self.file.as_mut(), self.unsynced > 0) {
            f.sync_data()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// Visit the complete records of `path` and truncate a torn last line.
fn repair(
    path: &Path,
    visit: &mut impl FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<Scan> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let (mut buf, mut good_end, mut line_no) = (Vec::new(), 0u64, 0u64);
    let mut scan = Scan::default();
    let mut torn: Option<u64> = None;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some(bad) = torn {
            bail!(
                "{}: line {bad} is not a valid record but more lines follow; \
                 the file is damaged (fix or remove that line, or use --overwrite)",
                path.display()
            );
        }
        let complete = buf.last() == Some(&b'\n');
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v) if complete => {
                visit(v).with_context(|| format!("{} line {line_no}", path.display()))?;
                good_end += n as u64;
                scan.records += 1;
            }
            _ => torn = Some(line_no),
        }
    }
    let len = std::fs::metadata(path)?.len();
    if len > good_end {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot repair {}", path.display()))?;
        f.set_len(good_end)?;
        f.sync_all()?;
        scan.truncated_bytes = len - good_end;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(path: &Path) -> anyhow::Result<(Vec<Value>, Scan)> {
        let mut seen = Vec::new();
        let (_, scan) = JsonlLog::open(path, 0, |v| {
            seen.push(v["id"].clone());
            Ok(())
        })?;
        Ok((seen, scan))
    }

    #[test]
    fn appends_whole_lines_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let (mut log, scan) = JsonlLog::open(&path, 1, |_| Ok(())).unwrap();
        assert_eq!(scan, Scan::default());
        assert!(!path.exists(), "created lazily");
        log.append(&json!({"id": 1})).unwrap();
        log.append(&json!({"id": "b"})).unwrap();
        drop(log);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":1}\n{\"id\":\"b\"}\n"
        );
        let (seen, scan) = ids(&path).unwrap();
        assert_eq!(seen, vec![json!(1), json!("b")]);
        assert_eq!(scan.records, 2);
    }

    #[test]
    fn truncates_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        for tail in ["{\"id\":3,\"te", "{\"id\":3}", "{\"id\":3,\n"] {
            std::fs::write(&path, format!("{{\"id\":1}}\n{{\"id\":2}}\n{tail}")).unwrap();
            let (seen, scan) = ids(&path).unwrap();
            assert_eq!(seen, vec![json!(1), json!(2)], "tail {tail:?}");
            assert_eq!(scan.truncated_bytes, tail.len() as u64);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                "{\"id\":1}\n{\"id\":2}\n"
            );
        }
    }

    #[test]
    fn a_damaged_middle_line_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let text = "{\"id\":1}\ngarbage\n{\"id\":2}\n";
        std::fs::write(&path, text).unwrap();
        let err = ids(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("damaged"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "left untouched"
        );
    }
}
