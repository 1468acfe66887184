//! The crate's error type.

/// Errors returned by `diem-sampling`.
///
/// Configuration errors name the field and what would have been valid; shape errors name the operation, the
/// tensor and both shapes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field's name (e.g. `"TimeGrid.steps"`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor has the wrong shape.
    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    Shape {
        /// The operation that rejected the tensor.
        op: &'static str,
        /// Which tensor.
        what: &'static str,
        /// A description of the expected shape.
        expected: String,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// A Krylov solve or DPLR operation failed.
    #[error(transparent)]
    Linalg(#[from] diem_linalg::Error),
    /// An operator or noise-covariance check failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A model-side operation failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// A libtorch operation failed (e.g. autograd could not differentiate the prior denoiser).
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// A [`Error::Config`] error.
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Config { field, reason: reason.into() }
    }

    /// A [`Error::Shape`] error.
    pub fn shape(op: &'static str, what: &'static str, expected: impl Into<String>, got: &[i64]) -> Self {
        Self::Shape { op, what, expected: expected.into(), got: got.to_vec() }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_sampling::Error`).
pub type SamplingError = Error;
