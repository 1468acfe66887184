//! The manifold experiment's error type.

use std::path::PathBuf;

/// What can go wrong while generating, running or reporting the manifold experiment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its valid range.
    #[error("invalid manifold configuration: {field}: {reason}")]
    Config {
        /// The field's name (dotted for nested fields).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating the manifold or its samples failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// Building the projections or the observations failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// Sampling a prior failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::Error),
    /// The Sinkhorn metric failed.
    #[error(transparent)]
    Metrics(#[from] diem_metrics::Error),
    /// Drawing a figure failed.
    #[error(transparent)]
    Plot(#[from] diem_plot::Error),
    /// The EM run failed.
    #[error(transparent)]
    Em(#[from] diem_em::Error),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message.
        source: serde_json::Error,
    },
}

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

/// Result alias of the manifold module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_manifold::Error`).
pub type ManifoldError = Error;
