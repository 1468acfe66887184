//! The error type of diem-metrics.

use std::path::PathBuf;

/// What can go wrong when computing a metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input tensor has the wrong number of dimensions or mismatched sizes.
    #[error("{metric}: {what}")]
    Shape {
        /// The metric being computed.
        metric: &'static str,
        /// What was expected and what was given.
        what: String,
    },
    /// A configuration value is out of its valid range.
    #[error("{metric}: invalid parameter {name} = {value}: {expected}")]
    Parameter {
        /// The metric being computed.
        metric: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is accepted.
        expected: &'static str,
    },
    /// An input holds NaN or infinite values.
    #[error("{metric}: input {input} holds non-finite values")]
    NonFinite {
        /// The metric being computed.
        metric: &'static str,
        /// Which input.
        input: &'static str,
    },
    /// Input values lie outside the range a metric or network expects.
    #[error("{metric}: input {input} must hold values in {expected}, got values in [{min}, {max}]")]
    Range {
        /// The metric being computed.
        metric: &'static str,
        /// Which input.
        input: &'static str,
        /// The accepted range, e.g. `[0, 255]`.
        expected: &'static str,
        /// The smallest value found.
        min: f64,
        /// The largest value found.
        max: f64,
    },
    /// A statistic needs more samples than were given (e.g. a covariance needs at least 2).
    #[error("{metric}: needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// The metric being computed.
        metric: &'static str,
        /// The minimum number of samples.
        needed: i64,
        /// The number of samples given.
        got: i64,
    },
    /// A user-supplied TorchScript file is missing or cannot be loaded.
    #[error("cannot load the {model} TorchScript file {}: {reason}", path.display())]
    ModelFile {
        /// Which network (`inception` or `lpips`).
        model: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be loaded.
        reason: String,
    },
    /// A user-supplied TorchScript network failed to run or returned outputs of the wrong arity or shape.
    #[error("the {model} TorchScript network {}: expected {expected}, got {got}", path.display())]
    ModelOutput {
        /// Which network (`inception` or `lpips`).
        model: &'static str,
        /// The file the network was loaded from.
        path: PathBuf,
        /// What the contract requires.
        expected: String,
        /// What the network did or returned.
        got: String,
    },
    /// A feature-statistics file is missing, corrupt, or lacks a field.
    #[error("feature statistics file {}: {reason}", path.display())]
    StatsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be written or renamed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_metrics::Error`).
pub type MetricsError = Error;

/// Checks that a tensor is `[n, d]` with n ≥ 1 and finite entries.
pub(crate) fn check_points(metric: &'static str, input: &'static str, t: &tch::Tensor) -> Result<(i64, i64)> {
    let size = t.size();
    let &[n, d] = size.as_slice() else {
        return Err(Error::Shape { metric, what: format!("{input} must be [n, d], got {size:?}") });
    };
    if n < 1 || d < 1 {
        return Err(Error::Shape { metric, what: format!("{input} must be non-empty, got {size:?}") });
    }
    if !bool::try_from(t.f_isfinite()?.f_all()?)? {
        return Err(Error::NonFinite { metric, input });
    }
    Ok((n, d))
}
