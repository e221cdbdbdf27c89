//! Errors of the quantized formats and kernels: every one names the input and what is
//! wrong with it.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A shape, type, size or argument the operation does not accept.
    #[error("{0}")]
    Input(String),
    /// From candle (tensor access, device allocation or copies, kernel launches).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, QuantError>;

/// Bail with `QuantError::Input`.
macro_rules! input_err {
    ($($arg:tt)*) => {
        return Err($crate::error::QuantError::Input(format!($($arg)*)))
    };
}
pub(crate) use input_err;
