//! Helpers shared by the end-to-end tests (each test file includes this module).

use std::path::PathBuf;
use std::sync::Mutex;

/// The default model's GGUF, fetched once per test process.
pub fn default_model() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    engine_model::fetch::SMOLLM2_135M
        .ensure(&|m| eprintln!("{m}"))
        .expect("fetch the default model")
}
