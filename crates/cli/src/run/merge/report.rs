//! The merge's report: what each shard file held, then every problem (the first few of
//! each kind in full), and the exit status.

use super::{Ledger, MergeArgs, EXIT_INCOMPLETE, SHOW};
use crate::run::input::{parse_envelope, LineReader};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

impl Ledger {
    /// When the missing lines are exactly the lines of one shard `r/n` (their ids hash
    /// to r mod n, every accounted line's does not), that shard.
    fn missing_shard(&self, max_count: u64) -> Option<(u64, u64)> {
        let missing: Vec<usize> = (0..self.expect.len())
            .filter(|&i| self.is_missing(i))
            .take(2)
            .collect();
        let h0 = self.expect[*missing.first()?].shard_hash()?;
        if missing.len() < 2 {
            return None;
        }
        let lines = self
            .expect
            .iter()
            .filter(|e| e.shard_hash().is_some())
            .count() as u64;
        (2..=max_count.min(lines / 2))
            .find(|&n| {
                let r = h0 % n;
                (0..self.expect.len()).all(|i| match self.expect[i].shard_hash() {
                    None => true,
                    Some(h) => (h % n == r) == self.claims[i].is_none(),
                })
            })
            .map(|n| (h0 % n, n))
    }

    /// Print what was merged and every problem; returns the exit status.
    pub(super) fn report(&self, a: &MergeArgs, results: u64, errors: u64) -> anyhow::Result<i32> {
        let say = crate::say;
        let p = &self.problems;
        let requests = self
            .expect
            .iter()
            .filter(|e| e.shard_hash().is_some())
            .count();
        say(&format!(
            "merge: {}: {requests} request line(s); {} shard output(s)",
            a.input.display(),
            a.shards.len()
        ));
        for s in &self.files {
            let kind = if s.errors {
                "error record(s)"
            } else {
                "result(s)"
            };
            say(&format!("  {}: {} {kind}", s.path.display(), s.records));
        }
        let missing: Vec<usize> = (0..self.expect.len())
            .filter(|&i| self.is_missing(i))
            .collect();
        for f in &p.missing_files {
            say(&format!("missing file: {f}"));
        }
        if !missing.is_empty() {
            say(&format!(
                "missing: {} line(s) have no result or error record: {}",
                missing.len(),
                self.describe(&a.input, &missing)?
            ));
            if let Some((r, n)) = self.missing_shard(4 * a.shards.len() as u64 + 8) {
                say(&format!(
                    "  they are exactly the lines of shard {r}/{n}: is its output among those given, and did its task finish?"
                ));
            }
        }
        let lists = [
            ("duplicated", &p.duplicated, p.n_duplicated),
            ("foreign", &p.foreign, p.n_foreign),
            ("damaged", &p.damaged, p.n_damaged),
        ];
        for (what, list, n) in lists {
            for msg in list {
                say(&format!("{what}: {msg}"));
            }
            if n > list.len() as u64 {
                say(&format!("{what}: ... {} more", n - list.len() as u64));
            }
        }
        for msg in &p.torn {
            say(&format!("torn: {msg}"));
        }
        let errors_out = crate::run::default_errors_path(&a.output);
        say(&format!(
            "merged {results} result(s) into {}{}",
            a.output.display(),
            if errors > 0 {
                format!(", {errors} error record(s) into {}", errors_out.display())
            } else {
                String::new()
            }
        ));
        let bad = [
            missing.len() as u64,
            p.missing_files.len() as u64,
            p.n_duplicated,
            p.n_foreign,
            p.torn.len() as u64,
            p.n_damaged,
        ];
        if bad.iter().any(|&n| n > 0) {
            say(&format!(
                "incomplete: {} missing line(s), {} missing file(s), {} duplicated, {} foreign, \
                 {} torn, {} damaged record(s)",
                bad[0], bad[1], bad[2], bad[3], bad[4], bad[5]
            ));
            return Ok(EXIT_INCOMPLETE);
        }
        say(&format!(
            "complete: each of the {requests} request line(s) is accounted for exactly once \
             ({results} result(s), {errors} error record(s))"
        ));
        Ok(if errors > 0 {
            crate::run::EXIT_SOME_FAILED
        } else {
            0
        })
    }

    /// "line 3 (id "a"), line 9 (no id), ..." for the first `SHOW` of `lines` (indices).
    fn describe(&self, input: &Path, lines: &[usize]) -> anyhow::Result<String> {
        let shown = &lines[..lines.len().min(SHOW)];
        let mut reader = LineReader::new(BufReader::new(File::open(input)?));
        let mut parts = Vec::new();
        while let Some((n, bytes)) = reader.next_line()? {
            if parts.len() == shown.len() {
                break;
            }
            if shown.contains(&(n as usize - 1)) {
                let id = match parse_envelope(n, bytes) {
                    Ok(Some(env)) => format!("id {}", env.id),
                    _ => "no id".to_string(),
                };
                parts.push(format!("line {n} ({id})"));
            }
        }
        if lines.len() > shown.len() {
            parts.push(format!("... {} more", lines.len() - shown.len()));
        }
        Ok(parts.join(", "))
    }
}
