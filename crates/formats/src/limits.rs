//! Sane upper bounds for what an input may claim, checked before allocating.
//!
//! They are far above any real model or request (the largest vocabularies have about
//! 260k tokens, the largest checkpoints a few thousand tensors) and far below what would
//! exhaust memory; a file or line beyond them is rejected with the limit named.

/// Tensors in one GGUF file.
pub const GGUF_MAX_TENSORS: u64 = 1 << 20;
/// Metadata key/value pairs in one GGUF file.
pub const GGUF_MAX_KEYS: u64 = 1 << 16;
/// Bytes in a metadata key (the GGUF specification's limit).
pub const GGUF_MAX_KEY_BYTES: u64 = 65_535;
/// Bytes in a tensor name (the GGUF specification's limit).
pub const GGUF_MAX_NAME_BYTES: u64 = 64;
/// Bytes in one metadata string value (a chat template is a few tens of KiB).
pub const GGUF_MAX_STRING_BYTES: u64 = 16 << 20;
/// Elements in one metadata array (vocabularies and merges are below a million).
pub const GGUF_MAX_ARRAY_LEN: u64 = 1 << 24;
/// Nesting of arrays inside arrays.
pub const GGUF_MAX_ARRAY_DEPTH: usize = 4;
/// Dimensions of one tensor (ggml's GGML_MAX_DIMS).
pub const GGUF_MAX_DIMS: u32 = 4;

/// Bytes in a safetensors JSON header (the safetensors crate's limit).
pub const SAFETENSORS_MAX_HEADER_BYTES: u64 = 100_000_000;
/// Dimensions of one safetensors tensor.
pub const SAFETENSORS_MAX_DIMS: usize = 8;

/// Bytes in one chat template source.
pub const TEMPLATE_MAX_SOURCE_BYTES: usize = 1 << 20;
/// Template instructions per render (minijinja fuel).
pub const TEMPLATE_FUEL: u64 = 2_000_000;
/// Template recursion depth (macros, includes, nested blocks).
pub const TEMPLATE_MAX_RECURSION: usize = 100;
/// Bytes a rendered prompt may have.
pub const TEMPLATE_MAX_OUTPUT_BYTES: usize = 16 << 20;

/// Bytes in one JSONL request line.
pub const JSONL_MAX_LINE_BYTES: usize = 16 << 20;
/// Stop strings in one request.
pub const MAX_STOP_STRINGS: usize = 64;
/// Bytes in one stop string.
pub const MAX_STOP_STRING_BYTES: usize = 4096;
