//! The records a benchmark produces, as saved in `results.json` and read back by
//! `engine report`: the environment, every configuration, every run, every request's
//! timeline and every step's record, with the per-config summaries and the analysis.

use crate::analysis::GroupAnalysis;
use crate::device::Ceilings;
use crate::roofline::Roofline;
use crate::spec::ConfigSpec;
use crate::summary::ConfigSummary;
use crate::telemetry::TelemetrySummary;
use engine_core::{RequestTimeline, StepRecord};
use serde::{Deserialize, Serialize};

/// Version of the `results.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

/// One request as the profiler saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: u64,
    /// Why it finished (`stop`, `length`, ...).
    pub finish_reason: String,
    pub timeline: RequestTimeline,
    /// Its use case under `--workload` or length distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_case: Option<String>,
}

/// One measured (or warm-up) run of a configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub index: usize,
    /// The measured window, seconds since the engine's epoch: first arrival to the end
    /// of the last step (the step's end is after the device synchronized).
    pub start_s: f64,
    pub end_s: f64,
    pub requests: Vec<RequestRecord>,
    pub steps: Vec<StepRecord>,
    /// Requests the engine refused at `add_request`, or (over HTTP) answered 429
    /// (counted, not retried).
    pub rejected: usize,
    /// The profiler's own time between consecutive `Engine::step` calls, per step.
    pub overhead_s: Vec<f64>,
    /// Over HTTP: requests that failed (an error status other than 429, a connection
    /// error, an error event or a stream cut short), and those past the client timeout.
    #[serde(default)]
    pub failed: usize,
    #[serde(default)]
    pub timed_out: usize,
    /// Up to five distinct failure messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl RunRecord {
    pub fn wall_s(&self) -> f64 {
        self.end_s - self.start_s
    }
}

/// Whether a configuration ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// The batch cannot be held by the KV cache (or the scheduler's limits); not run.
    DoesNotFit {
        reason: String,
    },
    /// The engine failed while running it.
    Failed {
        error: String,
    },
}

impl Status {
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok)
    }

    /// Short text for tables.
    pub fn short(&self) -> String {
        match self {
            Status::Ok => "ok".into(),
            Status::DoesNotFit { .. } => "does not fit".into(),
            Status::Failed { .. } => "failed".into(),
        }
    }
}

/// Everything about one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResult {
    pub spec: ConfigSpec,
    pub status: Status,
    /// Warm-up runs executed before the measured ones (excluded from every metric).
    pub warmup_runs: usize,
    pub runs: Vec<RunRecord>,
    pub summary: Option<ConfigSummary>,
    pub telemetry: TelemetrySummary,
    pub roofline: Option<Roofline>,
    /// Cost figures, with `--gpu-cost-per-hour` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::ConfigCost>,
}

impl ConfigResult {
    /// A config about to run: status Ok, nothing measured yet.
    pub fn new(spec: ConfigSpec) -> Self {
        Self {
            spec,
            status: Status::Ok,
            warmup_runs: 0,
            runs: Vec::new(),
            summary: None,
            telemetry: Default::default(),
            roofline: None,
            cost: None,
        }
    }
}

/// Facts about the model that the floors need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    pub num_parameters: u64,
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    /// `num_attention_heads * head_dim`.
    pub q_dim: usize,
    pub tie_word_embeddings: bool,
    /// Weight bytes a decode step reads, in the weights' real (quantized) types; 0 in
    /// results written before it existed (the roofline then estimates from `weight_bytes`).
    #[serde(default)]
    pub weight_bytes_read: u64,
    /// Bytes held per weight type (`f32`, `q4_1`, ...).
    #[serde(default)]
    pub weight_bytes_by_type: std::collections::BTreeMap<String, u64>,
}

/// Where and on what the benchmark ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub model: String,
    pub model_source: String,
    pub model_facts: ModelFacts,
    pub dtype: String,
    /// Which implementation of the hot-path ops ran: `candle` or `fused` (empty in
    /// results written before `--kernels` existed).
    #[serde(default)]
    pub kernels: String,
    /// Decode graphs: buckets, capture time and memory (`None`: every step ran eagerly).
    #[serde(default)]
    pub graphs: Option<engine_core::graphs::GraphReport>,
    /// Whether the engine overlapped steps (step n+1 launched before n's results).
    #[serde(default)]
    pub overlap: bool,
    pub device: String,
    pub device_name: String,
    pub driver: String,
    pub cpu: String,
    pub num_cpus: usize,
    /// The engine configuration, as the engine reports it.
    pub engine_config: serde_json::Value,
    pub git_commit: String,
    /// UTC, ISO 8601.
    pub date: String,
    pub command_line: String,
    pub profiler_version: String,
    /// Set when the run measured an OpenAI-compatible endpoint over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointInfo>,
}

/// An endpoint run: where, through which API, and what HTTP cannot observe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub url: String,
    /// `completions` or `chat`.
    pub api: String,
    pub served_model: String,
    /// How output tokens were counted and timed (see the endpoint module).
    pub token_counts: String,
    /// Metrics left empty because a client cannot see them.
    pub not_measured: Vec<String>,
}

/// Settings that apply to the whole invocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub runs: usize,
    pub warmup: usize,
    pub num_requests: usize,
    pub respect_eos: bool,
    pub seed: u64,
    pub prompts_file: Option<String>,
    pub slo: crate::analysis::Slo,
    pub latency_budget_s: Option<f64>,
    pub knee_method: String,
    pub percentile_method: String,
    /// The traffic mix (`--workload`, length distributions), when one drew the lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::traffic::Traffic>,
    /// The GPU's price (`--gpu-cost-per-hour`, `--num-gpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::CostSettings>,
}

/// The whole `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResults {
    pub schema_version: u32,
    pub environment: Environment,
    pub settings: Settings,
    pub ceilings: Option<Ceilings>,
    pub configs: Vec<ConfigResult>,
    pub analysis: Vec<GroupAnalysis>,
    /// Total wall time of the invocation, seconds.
    pub total_wall_s: f64,
}
