//! The profiler: drives the engine in-process (no network, no HTTP in the timed path)
//! and measures it.
//!
//! - [`spec`]: one configuration and the sweep grid; [`workload`]: the prompts;
//!   [`traffic`] and [`lengths`]: use cases and their length distributions;
//!   [`run_plan`]: every random choice of a run, from the seed.
//! - [`static_batch`] and [`serving`]: the drivers (static batches; closed- and
//!   open-loop serving through the real scheduler); [`bench`] runs a whole sweep.
//! - [`metrics`], [`summary`], [`analysis`]: percentiles, per-config metrics, goodput,
//!   the knee and the latency-budget choice (definitions in docs/metrics.md);
//!   [`breakdown`]: per-use-case rows and the latency-vs-length fit; [`cost`]: what
//!   tokens and users cost at a GPU's price.
//! - [`plan`]: capacity planning (KV blocks, users per context length) with the
//!   engine's own sizing function.
//! - [`telemetry`] (NVML and RSS sampling), [`device`] (measured ceilings) and
//!   [`roofline`] (floors and achieved fractions).
//! - [`endpoint`]: the same workloads and metrics against an OpenAI-compatible server
//!   over HTTP (`engine bench --endpoint`).
//! - [`progress`] and [`eta`]: the progress bar and its load-aware time estimate.
//! - [`report`]: results.json, summary.csv, report.md, SVG plots, the terminal table and
//!   Chrome traces; [`compare`]: two saved runs side by side.

pub mod analysis;
pub mod bench;
pub mod breakdown;
pub mod compare;
pub mod cost;
pub mod device;
pub mod driver;
pub mod endpoint;
pub mod environment;
pub mod error;
pub mod eta;
pub mod lengths;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod report;
pub mod result;
pub mod roofline;
pub mod run_plan;
pub mod serving;
pub mod spec;
pub mod static_batch;
pub mod summary;
pub mod telemetry;
pub mod traffic;
pub mod workload;

pub use error::{ProfilerError, Result};
