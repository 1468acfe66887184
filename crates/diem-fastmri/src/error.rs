//! The crate's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong while preparing or reproducing the fastMRI experiment. File errors name
/// the file; configuration errors name the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value or command-line option is out of its valid range.
    #[error("invalid fastMRI configuration: {field}: {reason}")]
    Config {
        /// The field's (dotted) name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Python interpreter or one of its packages (h5py, numpy) is missing or failed to start.
    #[error("python ({}): {reason}", python.display())]
    Python {
        /// The interpreter that was tried.
        python: PathBuf,
        /// What is wrong, with the fix.
        reason: String,
    },
    /// An HDF5 file could not be read (corrupt file, missing `reconstruction_rss` dataset, wrong shape).
    #[error("{}: {reason}", file.display())]
    Hdf5 {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data do not fit the experiment (no volumes, sizes that differ or do not fit the U-Net).
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file or folder concerned.
        path: PathBuf,
        /// What is wrong.
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
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Building or saving the observations failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A model or checkpoint operation failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// Sampling failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::Error),
    /// PSNR/SSIM failed.
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

    /// A [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A [`Error::Data`] for `path`.
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Data { path: path.into(), reason: reason.into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_fastmri::Error`).
pub type FastMriError = Error;
