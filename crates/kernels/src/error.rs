//! Errors of the kernel wrappers.

/// What went wrong, naming the input.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A shape, dtype, device or argument the kernel does not accept.
    #[error("{0}")]
    Input(String),
    /// A kernel's output disagrees with its reference (the report says where).
    #[error("kernel output differs from the reference:\n{0}")]
    Mismatch(String),
    /// From candle (allocation, copy, launch).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// Bail with `KernelError::Input` from a wrapper.
macro_rules! input_err {
    ($($arg:tt)*) => {
        return Err($crate::error::KernelError::Input(format!($($arg)*)))
    };
}
pub(crate) use input_err;
