//! The engine: continuous batching over the paged decoder, sampling, stop handling and
//! per-step / per-request timing records.
//!
//! The hot path, `Engine::step` (step.rs; the picture is in engine.rs):
//! `Scheduler::schedule` -> `ModelRunner::prepare` (the step's batch, one hop) ->
//! `ModelRunner::forward` (`Decoder::forward`, logits stay on the device) ->
//! `ModelRunner::sample` (every sampling row in one launch of the device sample op; see
//! [`sampler`]) -> detokenize and stop strings -> `Scheduler::update_from_output` (where
//! requests finish) -> `Vec<RequestOutput>` and one [`StepRecord`].

pub mod admission;
pub mod device;
pub mod engine;
pub mod error;
pub mod graphs;
mod inflight;
pub mod kv_sizing;
pub mod records;
pub mod rng;
pub mod runner;
pub mod sampler;
mod step;
pub mod stop;

pub use engine::{
    num_blocks_for, Engine, EngineConfig, FinalOutput, Prompt, RequestId, RequestOutput,
};
pub use engine_scheduler::{FinishReason, SamplingParams};
pub use error::{EngineError, Result};
pub use records::{RequestTimeline, StepRecord};
