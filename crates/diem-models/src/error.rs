//! The crate's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in `diem-models`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A DPLR or solver operation failed.
    #[error(transparent)]
    Linalg(#[from] diem_linalg::LinalgError),
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument or tensor.
        what: String,
        /// A description of the expected shape.
        expected: String,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field's name (dotted for nested fields).
        field: String,
        /// What is wrong with it.
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
    /// A JSON file could not be parsed (unknown field, wrong type, missing field, ...).
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message, which names the field, line and column.
        source: serde_json::Error,
    },
    /// A checkpoint's config was written by an incompatible version of this crate.
    #[error("{}: field `version`: checkpoint version {found} is not supported (expected {expected})", path.display())]
    Version {
        /// The config file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this crate reads and writes.
        expected: u32,
    },
    /// A weights file does not match the model it is loaded into.
    #[error("{}: tensor `{name}`: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong (missing, unexpected, wrong shape or dtype).
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`Error::Shape`] for `what`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, got: &[i64]) -> Self {
        Self::Shape { what: what.into(), expected: expected.into(), got: got.to_vec() }
    }
}
