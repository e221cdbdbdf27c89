//! Pure scheduling logic with no tensors: requests and their sampling parameters, the
//! block pool, the KV cache manager and the continuous-batching scheduler.
//!
//! The engine calls [`Scheduler::schedule`] for each step, runs the model on the
//! [`SchedulerOutput`], and reports sampled tokens back through
//! [`Scheduler::update_from_output`].

pub mod block_pool;
pub mod kv_cache_manager;
pub mod sampling_params;
pub mod scheduler;
pub mod sequence;

pub use block_pool::{blocks_for, BlockHash, BlockId, BlockPool, BlockPoolError};
pub use kv_cache_manager::KvCacheManager;
pub use sampling_params::{SamplingParams, SamplingParamsError};
pub use scheduler::{AdmissionError, ScheduledSeq, Scheduler, SchedulerConfig, SchedulerOutput};
pub use sequence::{FinishReason, NewToken, SeqId, SeqStatus, Sequence};
