//! Pure scheduling logic with no tensors: sampling parameters, the block pool that
//! hands out KV-cache blocks, and (later) the continuous-batching scheduler.

pub mod block_pool;
pub mod sampling_params;

pub use block_pool::{blocks_for, BlockPool, BlockPoolError};
pub use sampling_params::{SamplingParams, SamplingParamsError};
