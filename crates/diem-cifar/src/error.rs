//! The crate's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong while reading CIFAR-10, preparing observations or running the experiment.
///
/// File errors name the file; configuration errors name the (dotted) field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its valid range.
    #[error("invalid CIFAR-10 configuration: {field}: {reason}")]
    Config {
        /// The field's dotted name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CIFAR-10 binary file (or archive member) does not have the expected content.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file (for an archive member: `archive.tar.gz/member`).
        path: PathBuf,
        /// What is wrong (sizes, labels, missing members).
        reason: String,
    },
    /// No CIFAR-10 data set was found where one was expected.
    #[error("no CIFAR-10 binary data set in {}: {hint}", dir.display())]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// Where to put the files, or how to get them.
        hint: String,
    },
    /// Downloading the archive failed (offline, `curl` missing, wrong checksum).
    #[error("downloading {url} failed: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What happened and what to do instead.
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
    /// A JSON file could not be read or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message.
        source: serde_json::Error,
    },
    /// A `.npy` file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// ndarray-npy's message.
        reason: String,
    },
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Building or saving observations failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A model operation failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// Sampling failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::Error),
    /// A metric (FID, IS) failed.
    #[error(transparent)]
    Metrics(#[from] diem_metrics::Error),
    /// Drawing a figure failed.
    #[error(transparent)]
    Plot(#[from] diem_plot::Error),
    /// The EM run failed.
    #[error(transparent)]
    Em(#[from] diem_em::Error),
}

impl Error {
    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format { path: path.into(), reason: reason.into() }
    }

    /// A [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_cifar::Error`).
pub type CifarError = Error;
