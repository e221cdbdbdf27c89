//! `engine report DIR` re-renders a saved benchmark (table, summary.csv, report.md and
//! plots from its results.json) into a new directory, `DIR/report/` unless `--out` says
//! where, or into DIR itself with `--in-place`, so the files a run wrote are never
//! replaced unasked. `engine report A B` compares two runs config by config and fails
//! with the reason when they have no configuration in common.

use anyhow::Context;
use clap::Args;
use engine_profiler::{compare, cost, report};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// One benchmark directory (or results.json) to re-render, or two to compare (B / A).
    #[arg(required = true, num_args = 1..=2)]
    pub runs: Vec<PathBuf>,
    /// Where to write the re-rendered files (default: a `report` folder in the
    /// benchmark's directory).
    #[arg(long, conflicts_with = "in_place")]
    pub out: Option<PathBuf>,
    /// Rewrite summary.csv, report.md and the plots in the benchmark's own directory.
    #[arg(long)]
    pub in_place: bool,
}

/// The directory holding the run's results.json.
fn run_dir(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.to_path_buf()
    } else {
        p.parent().map(PathBuf::from).unwrap_or_default()
    }
}

pub fn run(a: ReportArgs) -> anyhow::Result<()> {
    let read =
        |p: &PathBuf| report::read_results(p).with_context(|| format!("reading {}", p.display()));
    match a.runs.as_slice() {
        [one] => {
            let r = read(one)?;
            print!("{}", report::table::render_text(&r));
            for line in report::table::analysis_lines(&r) {
                println!("{line}");
            }
            for line in cost::lines(&r)
                .into_iter()
                .chain(report::traffic::lines(&r))
            {
                println!("{line}");
            }
            let dir = match &a.out {
                Some(d) => d.clone(),
                None if a.in_place => run_dir(one),
                None => run_dir(one).join("report"),
            };
            report::render_dir(&r, &dir).with_context(|| format!("writing {}", dir.display()))?;
            crate::say(&format!(
                "wrote summary.csv, report.md and plots to {}{}",
                dir.display(),
                if a.in_place || a.out.is_some() {
                    ""
                } else {
                    " (--in-place rewrites the run's own files)"
                }
            ));
        }
        [first, second] => {
            let (ra, rb) = (read(first)?, read(second)?);
            if compare::compare(&ra, &rb).0.is_empty() {
                anyhow::bail!(
                    "nothing to compare between {} and {}: {}",
                    first.display(),
                    second.display(),
                    compare::why_nothing_matched(&ra, &rb)
                );
            }
            println!("A = {}\nB = {}", first.display(), second.display());
            print!("{}", compare::render(&ra, &rb));
        }
        _ => anyhow::bail!("expected one or two benchmark directories"),
    }
    Ok(())
}
