//! `engine report DIR` re-renders a saved benchmark (table, summary.csv, report.md and
//! plots from its results.json); `engine report A B` compares two runs config by config.

use anyhow::Context;
use clap::Args;
use engine_profiler::{compare, cost, report};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// One benchmark directory (or results.json) to re-render, or two to compare (B / A).
    #[arg(required = true, num_args = 1..=2)]
    pub runs: Vec<PathBuf>,
    /// Where to write the re-rendered files (default: the benchmark's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
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
                None if one.is_dir() => one.clone(),
                None => one.parent().map(PathBuf::from).unwrap_or_default(),
            };
            report::render_dir(&r, &dir).with_context(|| format!("writing {}", dir.display()))?;
            crate::say(&format!(
                "re-rendered summary.csv, report.md and plots in {}",
                dir.display()
            ));
        }
        [first, second] => {
            let (ra, rb) = (read(first)?, read(second)?);
            println!("A = {}\nB = {}", first.display(), second.display());
            print!("{}", compare::render(&ra, &rb));
        }
        _ => anyhow::bail!("expected one or two benchmark directories"),
    }
    Ok(())
}
