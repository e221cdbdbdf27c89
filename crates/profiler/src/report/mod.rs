//! Writing and reading a benchmark's files: results.json (everything), summary.csv (one
//! row per config), report.md, the SVG plots, and the optional Chrome trace. `engine
//! report DIR` re-renders all but results.json from results.json.

pub mod axis;
pub mod columns;
pub mod csv;
pub mod legend;
pub mod markdown;
pub mod plots;
pub mod svg;
pub mod table;
pub mod trace;
pub mod traffic;

use crate::error::{ProfilerError, Result};
use crate::result::BenchResults;
use std::path::{Path, PathBuf};

fn write(path: PathBuf, text: &str) -> Result<PathBuf> {
    std::fs::write(&path, text).map_err(|e| ProfilerError::io(&path, e))?;
    Ok(path)
}

fn json_err(path: &Path, e: serde_json::Error) -> ProfilerError {
    ProfilerError::Json {
        path: path.display().to_string(),
        source: e,
    }
}

/// Read `results.json` (given the file or the directory holding it).
pub fn read_results(path: &Path) -> Result<BenchResults> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| ProfilerError::io(&file, e))?;
    serde_json::from_str(&text).map_err(|e| json_err(&file, e))
}

/// Write results.json into `dir`.
pub fn write_results_json(r: &BenchResults, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("results.json");
    let text = serde_json::to_string(r).map_err(|e| json_err(&path, e))?;
    write(path, &text)
}

/// Write summary.csv, report.md and the plots into `dir` (created if needed).
pub fn render_dir(r: &BenchResults, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| ProfilerError::io(dir, e))?;
    let mut written = vec![write(dir.join("summary.csv"), &csv::render(r))?];
    if let Some(text) = traffic::csv(r) {
        written.push(write(dir.join("use_cases.csv"), &text)?);
    }
    let plots = plots::all(r);
    for (name, svg) in &plots {
        written.push(write(dir.join(name), svg)?);
    }
    let names: Vec<&str> = plots.iter().map(|(n, _)| *n).collect();
    written.push(write(dir.join("report.md"), &markdown::render(r, &names))?);
    Ok(written)
}

/// Write every file (results.json included) into `dir`.
pub fn write_all(r: &BenchResults, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| ProfilerError::io(dir, e))?;
    let mut written = vec![write_results_json(r, dir)?];
    written.extend(render_dir(r, dir)?);
    Ok(written)
}

/// Write the Chrome/Perfetto trace to `path`.
pub fn write_trace(r: &BenchResults, path: &Path) -> Result<()> {
    let text = serde_json::to_string(&trace::render(r)).map_err(|e| json_err(path, e))?;
    write(path.to_path_buf(), &text).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::analysis::{analyse, Slo};
    use crate::result::*;
    use crate::spec::{ConfigSpec, Load};
    use crate::summary::{summarize, tests::synthetic_run};

    fn config(b: usize, status: Status) -> ConfigResult {
        let runs = if status.is_ok() {
            vec![synthetic_run(b, 11), synthetic_run(b, 11)]
        } else {
            vec![]
        };
        ConfigResult {
            spec: ConfigSpec {
                load: Load::Batch { size: b },
                input_len: 10,
                output_len: 11,
                temperature: 0.0,
                top_p: 1.0,
                workload: None,
            },
            summary: status.is_ok().then(|| summarize(&runs, &Slo::default())),
            status,
            warmup_runs: 1,
            runs,
            telemetry: Default::default(),
            roofline: None,
            cost: None,
        }
    }

    /// Three configs that ran and one that did not fit.
    pub(crate) fn sample_results() -> BenchResults {
        let configs = vec![
            config(1, Status::Ok),
            config(8, Status::Ok),
            config(32, Status::Ok),
            config(
                128,
                Status::DoesNotFit {
                    reason: "needs 768 blocks, the cache has 100".into(),
                },
            ),
        ];
        BenchResults {
            schema_version: SCHEMA_VERSION,
            environment: Environment {
                model: "test".into(),
                ..Default::default()
            },
            settings: Settings::default(),
            ceilings: None,
            analysis: analyse(&configs, Some(2.5)),
            configs,
            total_wall_s: 1.0,
        }
    }

    #[test]
    fn write_all_then_read_back_and_rerender() {
        let dir =
            std::env::temp_dir().join(format!("engine-profiler-report-{}", std::process::id()));
        let r = sample_results();
        let files = super::write_all(&r, &dir).unwrap();
        // results.json, summary.csv, report.md and the plots with something to show:
        // one output length gives no latency_vs_output_len.svg.
        assert_eq!(files.len(), 3 + super::plots::all(&r).len());
        assert!(!files
            .iter()
            .any(|f| f.ends_with("latency_vs_output_len.svg")));
        let back = super::read_results(&dir).unwrap();
        // Floats may differ in the last bit after a JSON round trip; the rendering must not.
        assert_eq!(super::csv::render(&back), super::csv::render(&r));
        assert_eq!(back.configs.len(), r.configs.len());
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if f.extension().is_some_and(|e| e == "svg") {
                assert!(text.contains("<title>"), "{}", f.display());
            }
        }
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("does not fit") && md.contains("knee"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
