//! The engine: sampler, model runner and generation loop.

pub mod rng;
pub mod sampler;
