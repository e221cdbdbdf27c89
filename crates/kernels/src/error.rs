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

/// Fail unless every named tensor is on the device of `anchor`.
pub(crate) fn same_device(
    op: &str,
    anchor: (&str, &candle_core::Tensor),
    others: &[(&str, &candle_core::Tensor)],
) -> Result<()> {
    let dev = anchor.1.device();
    for (name, t) in others {
        if !t.device().same_device(dev) {
            input_err!(
                "{op}: {name} is on {:?}, {} on {:?}",
                t.device().location(),
                anchor.0,
                dev.location()
            );
        }
    }
    Ok(())
}

/// Whether two tensors share one storage. An in-place op's held operands must not alias
/// its destination: candle holds the destination's write lock while the op runs.
pub(crate) fn shares_storage(a: &candle_core::Tensor, b: &candle_core::Tensor) -> bool {
    let addr = |t: &candle_core::Tensor| {
        let (s, _) = t.storage_and_layout();
        std::ptr::from_ref(&*s).addr()
    };
    addr(a) == addr(b)
}
