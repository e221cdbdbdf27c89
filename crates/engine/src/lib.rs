//! The engine: continuous batching over the paged decoder, sampling, stop handling and
//! per-step / per-request timing records.
//!
//! The hot path, `Engine::step` (see `engine.rs` and `step.rs`):
//! `Scheduler::schedule` -> `ModelRunner::prepare_inputs` -> `ModelRunner::execute`
//! (`Decoder::forward`) -> [`sampler::sample`] -> `Scheduler::update_from_output` ->
//! detokenize and stop strings -> `Vec<RequestOutput>` and one [`StepRecord`].

pub mod admission;
pub mod device;
pub mod engine;
pub mod error;
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
