//! The crate's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in `diem-em`.
///
/// File errors name the file; configuration errors name the (dotted) field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmError {
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field's dotted name (e.g. `"estep.chunk_size"`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor or data set has the wrong shape.
    #[error("{what}: expected {expected}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// A description of the expected shape.
        expected: String,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed (serde's message names the field, line and column).
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message.
        source: serde_json::Error,
    },
    /// A file has the wrong content (bad version, corrupt state, wrong array type).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run directory cannot be used as asked (already holds a run, holds none, different data).
    #[error("run directory {}: {reason}", path.display())]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Every E-step sample was dropped by the filter, so the M-step has no data.
    #[error("lap {lap}: the filter kept none of the {total} E-step samples")]
    EmptyTrainingSet {
        /// The lap.
        lap: usize,
        /// The number of samples before filtering.
        total: i64,
    },
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A DPLR or PPCA operation failed.
    #[error(transparent)]
    Linalg(#[from] diem_linalg::LinalgError),
    /// An operator or observation check failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A model, training or checkpoint operation failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// A sampler or posterior denoiser failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::SamplingError),
    /// A metric failed.
    #[error(transparent)]
    Metrics(#[from] diem_metrics::MetricsError),
    /// A collective failed, the ranks disagree, or another rank failed (its error's text is carried).
    #[error(transparent)]
    Dist(#[from] diem_dist::DistError),
    /// A [`crate::LapObserver`] failed.
    #[error("observer `{name}`: {source}")]
    Observer {
        /// The observer's [`crate::LapObserver::name`].
        name: String,
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `Result` with this crate's [`EmError`].
pub type Result<T, E = EmError> = std::result::Result<T, E>;

impl EmError {
    /// A [`EmError::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`EmError::Shape`] for `what`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, got: &[i64]) -> Self {
        Self::Shape { what: what.into(), expected: expected.into(), got: got.to_vec() }
    }

    /// An [`EmError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// An [`EmError::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::File { path: path.into(), reason: reason.into() }
    }

    /// An [`EmError::Observer`] wrapping any error.
    pub fn observer(
        name: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Observer { name: name.into(), source: source.into() }
    }
}
