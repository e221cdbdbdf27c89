//! The engine: sampling, stop handling and the generation loop over the paged decoder.
//!
//! The hot path of one step (see `generate.rs`):
//! `ForwardInputs::build` (ids, positions, slot mapping, block tables) ->
//! `Decoder::forward` (logits of the sampled rows) -> [`sampler::sample`] -> stop checks.

pub mod error;
pub mod generate;
pub mod rng;
pub mod sampler;
pub mod stop;

pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerationOutput, GenerationTiming, Generator};
