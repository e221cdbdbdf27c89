//! Checked readers for the inputs that come from strangers: model files, vocabularies,
//! chat templates and request lines.
//!
//! Every size, count, offset, dimension, type and string length an input claims is
//! checked against the bytes actually there and against the limits in [`limits`] before
//! anything is allocated or read, and every failure is an error that says what was wrong
//! and where, never a panic. The crate has no candle dependency so that `cargo fuzz`
//! (which rebuilds everything a target links with sanitizers) stays cheap; the fuzz
//! targets in `fuzz/` drive each reader below.
//!
//! - [`gguf`]: GGUF header, metadata and tensor infos with absolute byte ranges; a
//!   writer for tests and seeds.
//! - [`safetensors`]: the JSON header of a `.safetensors` file.
//! - [`vocab`]: a `tokenizers::Tokenizer` rebuilt from GGUF `tokenizer.ggml.*` metadata.
//! - [`chat`]: chat templates rendered under fuel, recursion and output limits.
//! - [`jsonl`]: request lines of `engine run` (BOM, CRLF, line-size limit).

pub mod chat;
pub mod error;
pub mod gguf;
pub mod jsonl;
pub mod limits;
pub mod safetensors;
pub mod vocab;

pub use error::{FormatError, Result};
