//! `engine run merge`: join the outputs of a sharded job and prove that nothing is lost.
//!
//! The input is the ledger: every non-blank input line must be accounted for exactly once,
//! by a result record (`{id, line, ...}` in a shard's output) or by an error record
//! (`{line, id, error}` in the errors file beside it, `X.errors.jsonl`). Merging reads
//! the input once (one small entry per line: the id's fingerprint), then each shard file
//! once, remembering where each record lies; it then copies the records, in input-line
//! order, into the merged output and its errors file. Nothing is rewritten: each record
//! keeps its bytes.
//!
//! What it reports, and why a job can be incomplete:
//! - missing: lines with no record (a shard never ran or stopped early; when the missing
//!   lines are exactly one shard's, it names the shard);
//! - duplicated: a line with two records (the same id in two shards' outputs, or twice
//!   in one: outputs of different `--shard` counts, or concatenated files);
//! - torn: a shard file whose last line is cut (its task died while writing; running
//!   that shard's job again resumes it and repairs the file); damaged: an invalid line
//!   before the last;
//! - foreign: a record whose line or id does not match the input (the output of another
//!   input, or of an edited one).
//!
//! Memory: about 72 bytes per input line (an id fingerprint and where its record lies),
//! whatever the size of the records. Errors files are looked for under the default
//! name only (`X.jsonl` -> `X.errors.jsonl`): a shard run with its own `--errors` path
//! would show its failed lines as missing.
//!
//! Exit status: 0 complete and every line has a result; 2 complete but some lines are
//! error records (as `engine run`); 3 incomplete. The merged files are written either
//! way (first record of a duplicated line wins), atomically (a temp file, then rename).

mod report;

use super::input::{parse_envelope, LineReader};
use super::shard::fingerprint;
use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Exit status when the shards do not account for the input exactly once.
const EXIT_INCOMPLETE: i32 = 3;
/// Problems of one kind listed in full; the rest are counted.
const SHOW: usize = 10;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The input JSONL that every shard ran on.
    #[arg(long)]
    pub input: PathBuf,
    /// The merged output, in input order (replaced if it exists); error records go to
    /// the errors file beside it (`X.errors.jsonl`).
    #[arg(long)]
    pub output: PathBuf,
    /// The shards' outputs; each one's errors file is read from beside it.
    #[arg(required = true, value_name = "SHARD_OUTPUT")]
    pub shards: Vec<PathBuf>,
}

/// What accounts for an input line.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Nothing: blank lines are skipped by the job.
    Blank,
    /// An error record without an id (the line has no readable id); holds the line's
    /// shard hash.
    NoId(u64),
    /// A record with this id (its fingerprint; the low 64 bits are the shard hash).
    Id(u128),
}

impl Expect {
    fn shard_hash(self) -> Option<u64> {
        match self {
            Self::Blank => None,
            Self::NoId(h) => Some(h),
            Self::Id(fp) => Some(fp as u64),
        }
    }
}

/// Where a record lies: file (index into `Ledger::files`), line there, byte range.
#[derive(Debug, Clone, Copy)]
struct Loc {
    file: u32,
    line: u64,
    offset: u64,
    len: u64,
}

/// A file to read records from.
struct Source {
    path: PathBuf,
    errors: bool,
    records: u64,
}

/// The input's lines, the records that claim them, and what went wrong.
#[derive(Default)]
struct Ledger {
    expect: Vec<Expect>,
    claims: Vec<Option<Loc>>,
    files: Vec<Source>,
    problems: Problems,
}

#[derive(Default)]
struct Problems {
    /// Listed (the first `SHOW` of each kind), and counted.
    missing_files: Vec<String>,
    duplicated: Vec<String>,
    n_duplicated: u64,
    foreign: Vec<String>,
    n_foreign: u64,
    torn: Vec<String>,
    damaged: Vec<String>,
    n_damaged: u64,
}

fn push_capped(list: &mut Vec<String>, count: &mut u64, msg: impl FnOnce() -> String) {
    *count += 1;
    if list.len() < SHOW {
        list.push(msg());
    }
}

pub fn run(a: &MergeArgs) -> anyhow::Result<i32> {
    let errors_out = super::default_errors_path(&a.output);
    let mut ledger = Ledger::read_input(&a.input)?;
    for (i, shard) in a.shards.iter().enumerate() {
        if a.shards[..i].iter().any(|s| super::same_file(s, shard)) {
            bail!("{} is given twice", shard.display());
        }
        for (path, errors) in [
            (shard.clone(), false),
            (super::default_errors_path(shard), true),
        ] {
            for p in [&a.input, &a.output, &errors_out] {
                if super::same_file(p, &path) {
                    bail!(
                        "{} is both a shard file and --input/--output",
                        path.display()
                    );
                }
            }
            if path.exists() {
                ledger.scan(path, errors)?;
            } else if !errors {
                let msg = format!("{}: no such file (did this shard run?)", path.display());
                ledger.problems.missing_files.push(msg);
            }
        }
    }
    let (results, errors) = ledger.write(&a.output, &errors_out)?;
    ledger.report(a, results, errors)
}

impl Ledger {
    /// One entry per input line, read with the job's own line parser.
    fn read_input(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("--input {}", path.display()))?;
        let mut reader = LineReader::new(BufReader::new(file));
        let mut expect = Vec::new();
        while let Some((n, bytes)) = reader
            .next_line()
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            expect.push(match parse_envelope(n, bytes) {
                Ok(None) => Expect::Blank,
                Ok(Some(env)) => Expect::Id(fingerprint(&env.key)),
                Err(_) => Expect::NoId(super::shard::fnv1a(format!("line:{n}").as_bytes())),
            });
        }
        Ok(Self {
            claims: vec![None; expect.len()],
            expect,
            ..Self::default()
        })
    }

    /// Read every record of one shard file; a torn last line or damaged lines are noted,
    /// never repaired (the shard's own job does that when it resumes).
    fn scan(&mut self, path: PathBuf, errors: bool) -> anyhow::Result<()> {
        let file = File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let file_ix = self.files.len() as u32;
        let (mut buf, mut offset, mut line) = (Vec::new(), 0u64, 0u64);
        let (mut invalid, mut records): (Option<u64>, u64) = (None, 0);
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?
                as u64;
            if n == 0 {
                break;
            }
            line += 1;
            if let Some(bad) = invalid.take() {
                let p = &mut self.problems;
                push_capped(&mut p.damaged, &mut p.n_damaged, || {
                    format!("{}:{bad}: not a valid record", path.display())
                });
            }
            match serde_json::from_slice::<Value>(&buf) {
                Ok(v) if buf.ends_with(b"\n") => {
                    let loc = Loc {
                        file: file_ix,
                        line,
                        offset,
                        len: n,
                    };
                    records += 1;
                    self.account(&path, &v, loc, errors);
                }
                _ => invalid = Some(line),
            }
            offset += n;
        }
        if let Some(bad) = invalid {
            self.problems.torn.push(format!(
                "{}:{bad}: torn last line (its task died while writing; run that shard's \
                 job again: it resumes and repairs the file)",
                path.display()
            ));
        }
        self.files.push(Source {
            path,
            errors,
            records,
        });
        Ok(())
    }

    /// Check one record against the input and claim its line.
    fn account(&mut self, path: &Path, v: &Value, loc: Loc, errors: bool) {
        let what = if errors { "error record" } else { "result" };
        let id = v.get("id").filter(|id| id.is_string() || id.is_number());
        let line = v.get("line").and_then(Value::as_u64);
        let expected = line.and_then(|l| self.expect.get((l as usize).wrapping_sub(1)));
        let matches = match (expected, id) {
            (Some(Expect::Id(fp)), Some(id)) => fingerprint(&id.to_string()) == *fp,
            (Some(Expect::NoId(_)), None) => errors,
            _ => false,
        };
        if !matches {
            let why = match (line, expected) {
                (None, _) => "no `line` field: not a record of `engine run`".to_string(),
                (Some(l), None) => {
                    format!("line {l}, but the input has {} lines", self.expect.len())
                }
                (Some(l), Some(Expect::Blank)) => format!("input line {l} is blank"),
                (Some(l), Some(Expect::NoId(_))) => format!("input line {l} has no id"),
                (Some(l), Some(Expect::Id(_))) => format!("input line {l} has another id"),
            };
            let p = &mut self.problems;
            push_capped(&mut p.foreign, &mut p.n_foreign, || {
                let id = id.map_or("none".to_string(), Value::to_string);
                format!(
                    "{}:{}: {what} with id {id}: {why}",
                    path.display(),
                    loc.line
                )
            });
            return;
        }
        let ix = line.unwrap_or(0) as usize - 1;
        match self.claims[ix] {
            None => self.claims[ix] = Some(loc),
            Some(first) => {
                let place = |l: Loc| {
                    let p = self.files.get(l.file as usize).map_or(path, |s| &s.path);
                    format!("{}:{}", p.display(), l.line)
                };
                let msg = format!("line {} in {} and {}", ix + 1, place(first), place(loc));
                let p = &mut self.problems;
                push_capped(&mut p.duplicated, &mut p.n_duplicated, || msg);
            }
        }
    }

    fn is_missing(&self, ix: usize) -> bool {
        !matches!(self.expect[ix], Expect::Blank) && self.claims[ix].is_none()
    }

    /// Copy the claimed records, in input order, into `output` and `errors_out`;
    /// returns (results, error records) written.
    fn write(&self, output: &Path, errors_out: &Path) -> anyhow::Result<(u64, u64)> {
        let files: Vec<File> = self
            .files
            .iter()
            .map(|s| {
                File::open(&s.path).with_context(|| format!("cannot read {}", s.path.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut outs = [AtomicFile::create(output)?, AtomicFile::create(errors_out)?];
        let mut counts = [0u64; 2];
        let mut buf = Vec::new();
        for loc in self.claims.iter().flatten() {
            let src = &self.files[loc.file as usize];
            buf.resize(loc.len as usize, 0);
            files[loc.file as usize]
                .read_exact_at(&mut buf, loc.offset)
                .with_context(|| format!("cannot read {}", src.path.display()))?;
            let k = usize::from(src.errors);
            outs[k].write(&buf)?;
            counts[k] += 1;
        }
        let [out, err] = outs;
        out.commit()?;
        if counts[1] > 0 {
            err.commit()?;
        } else {
            err.discard()?;
        }
        Ok((counts[0], counts[1]))
    }
}

/// A file written under a temporary name and renamed into place when complete.
struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
}

impl AtomicFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: BufWriter::new(file),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    fn commit(self) -> anyhow::Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })
    }

    /// Drop the temp file and any earlier file at `path` (no records of this kind).
    fn discard(self) -> anyhow::Result<()> {
        drop(self.out);
        std::fs::remove_file(&self.tmp)?;
        if self.path.exists() {
            std::fs::remove_file(&self.path)
                .with_context(|| format!("cannot remove the stale {}", self.path.display()))?;
        }
        Ok(())
    }
}
