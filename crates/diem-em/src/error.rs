//! The crate's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in `diem-em`.
///
/// File errors name the file; configuration errors name the (dotted) field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// An array that is about to be written (or was read) holds NaN or infinite values.
    #[error("{what}: {} of {total} rows hold NaN or infinite values (rows {})", rows.len(), row_list(rows))]
    NonFinite {
        /// What holds them: the file, the step, the method.
        what: String,
        /// The rows (indices along the first axis) with a non-finite entry.
        rows: Vec<i64>,
        /// The number of rows.
        total: i64,
    },
    /// `config.json` of a run was edited in a way a resume cannot honour (see [`crate::config::RESUMABLE`]).
    #[error("{}: {reason}", path.display())]
    ConfigChanged {
        /// The run's `config.json`.
        path: PathBuf,
        /// The dotted names of the fields that changed and may not.
        fields: Vec<String>,
        /// The whole explanation, with the old and new values.
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
    Linalg(#[from] diem_linalg::Error),
    /// An operator or observation check failed.
    #[error(transparent)]
    Operators(#[from] diem_operators::Error),
    /// A model, training or checkpoint operation failed.
    #[error(transparent)]
    Models(#[from] diem_models::Error),
    /// A sampler or posterior denoiser failed.
    #[error(transparent)]
    Sampling(#[from] diem_sampling::Error),
    /// A metric failed.
    #[error(transparent)]
    Metrics(#[from] diem_metrics::Error),
    /// A collective failed, the ranks disagree, or another rank failed (its error's text is carried).
    #[error(transparent)]
    Dist(#[from] diem_dist::Error),
    /// A [`crate::LapObserver`] failed.
    #[error("observer `{name}`: {source}")]
    Observer {
        /// The observer's [`crate::LapObserver::name`].
        name: String,
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The first few of `rows`, comma-separated, with an ellipsis after 8.
fn row_list(rows: &[i64]) -> String {
    let mut s: Vec<String> = rows.iter().take(8).map(i64::to_string).collect();
    if rows.len() > 8 {
        s.push("…".into());
    }
    s.join(", ")
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_em::Error`).
pub type EmError = Error;

impl Error {
    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`Error::Shape`] for `what`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, got: &[i64]) -> Self {
        Self::Shape { what: what.into(), expected: expected.into(), got: got.to_vec() }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// An [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::File { path: path.into(), reason: reason.into() }
    }

    /// An [`Error::NonFinite`] for the non-finite rows of `t` (`None` when every entry is finite, or `t`
    /// is not a float tensor).
    pub fn non_finite(what: impl Into<String>, t: &tch::Tensor) -> Option<Self> {
        let rows = non_finite_rows(t);
        if rows.is_empty() {
            return None;
        }
        Some(Self::NonFinite { what: what.into(), rows, total: t.size().first().copied().unwrap_or(1) })
    }

    /// An [`Error::Observer`] wrapping any error.
    pub fn observer(
        name: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Observer { name: name.into(), source: source.into() }
    }
}

/// The rows (along the first axis; a 0-d tensor is one row) of a float tensor that hold NaN or ±∞.
pub fn non_finite_rows(t: &tch::Tensor) -> Vec<i64> {
    if t.numel() == 0 || !t.is_floating_point() {
        return Vec::new();
    }
    let rows = t.size().first().copied().unwrap_or(1).max(1);
    let bad = t.isfinite().logical_not().reshape([rows, -1]).any_dim(1, false);
    if bad.any().int64_value(&[]) == 0 {
        return Vec::new();
    }
    let idx = bad.nonzero().reshape([-1]).to_device(tch::Device::Cpu);
    Vec::<i64>::try_from(&idx).unwrap_or_default()
}
