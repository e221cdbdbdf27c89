//! Chat messages and templates: the renderer lives in `engine_formats::chat`, where it
//! runs under fuel, recursion and output limits (a template comes with the model file,
//! so it is untrusted input) and is fuzzed without candle.

pub use engine_formats::chat::{ChatMessage, ChatTemplate};
