//! The error type of the studies and harnesses in this crate.

use std::path::PathBuf;

/// Everything that can go wrong in a study or a benchmark harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model or denoiser could not be built.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// A metric failed (shapes, non-finite samples, Sinkhorn settings).
    #[error(transparent)]
    Metrics(#[from] diem_metrics::Error),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field's name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Importance weights could not be normalized (all zero or non-finite).
    #[error("{what}: importance weights are degenerate ({reason})")]
    Weights {
        /// Which resampling step.
        what: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// An image file could not be decoded or encoded.
    #[error("image {}: {message}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A sampler or a guidance method failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::Error),
    /// An operator or an observation could not be built.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A JSON file could not be read or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Drawing a figure failed.
    #[error("drawing {}: {message}", path.display())]
    Plot {
        /// The output file.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_benches::Error`).
pub type BenchError = Error;

impl Error {
    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

impl From<diem_plot::Error> for Error {
    fn from(e: diem_plot::Error) -> Self {
        match e {
            diem_plot::Error::Io { path, source } => Self::Io { path, source },
            other => Self::Plot { path: std::path::PathBuf::new(), message: other.to_string() },
        }
    }
}
