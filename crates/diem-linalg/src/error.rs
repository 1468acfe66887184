//! The crate's error type.

/// Errors returned by `diem-linalg`.
///
/// Shape errors name the operation, the argument and both the expected and the actual shape, so that a caller
/// can tell which tensor was wrong without a debugger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or array had the wrong shape.
    #[error("{op}: argument `{arg}` has shape {got:?}, expected {expected}")]
    Shape {
        /// The operation that rejected the argument (e.g. `"Dplr::new"`).
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// A description of the expected shape (e.g. `"[..., N, r] with N = 5"`).
        expected: String,
        /// The shape that was passed.
        got: Vec<i64>,
    },
    /// Tensors that must share a dtype or a device do not.
    #[error("{op}: {message}")]
    Mismatch {
        /// The operation that rejected the arguments.
        op: &'static str,
        /// What differs (dtype or device, and the values seen).
        message: String,
    },
    /// A scalar parameter is out of its valid range.
    #[error("{op}: invalid parameter `{name}` = {value}: {expected}")]
    InvalidParameter {
        /// The operation that rejected the parameter.
        op: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The value that was passed, formatted.
        value: String,
        /// What would have been valid.
        expected: &'static str,
    },
    /// An error raised by libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_linalg::Error`).
pub type LinalgError = Error;
