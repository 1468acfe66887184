//! The crate's error type.
//!
//! Broken contracts inside the code that calls an operator (a tensor of the wrong shape handed to
//! [`LinearOperator::apply`](crate::LinearOperator::apply)) are `assert!`s naming both shapes, as
//! the project's style rules ask. Everything a user controls (constructor arguments, generator settings, files) returns
//! an [`Error`] that says which parameter, field or file is wrong and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong when building operators or reading and writing observation files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A tensor or shape argument has the wrong shape.
    #[error("{op}: {what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// The operator or function that checked the shape.
        op: &'static str,
        /// Which argument.
        what: String,
        /// A description of the accepted shapes.
        expected: String,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// A scalar parameter or a parameter array is out of its domain.
    #[error("{op}: invalid {param}: {reason}")]
    InvalidParameter {
        /// The operator or function that checked the parameter.
        op: &'static str,
        /// The parameter's name.
        param: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// An operator kind string that neither a built-in operator nor a registered loader reads.
    #[error(
        "unknown operator kind {kind:?} (expected one of identity, mask, projection, kspace, blur, \
             downsample, compose[..], stack[..], or a kind registered in this process; a custom operator \
             is loaded after `diem_operators::register_operator(\"its_kind\", loader)`)"
    )]
    UnknownKind {
        /// The kind string found.
        kind: String,
    },
    /// An operator that cannot be written to an observation file: it does not implement persistence
    /// ([`LinearOperator::kind`](crate::LinearOperator::kind) and
    /// [`LinearOperator::params`](crate::LinearOperator::params)), or no loader reads its kind back.
    #[error(
        "operator {kind:?} cannot be saved: {reason}. To persist a custom operator, implement \
             `LinearOperator::kind` (a name of ASCII letters, digits and `_`) and `LinearOperator::params`, \
             and register a loader with `diem_operators::register_operator`"
    )]
    NotPersistable {
        /// The operator's kind string (its Rust type name when it does not implement `kind`).
        kind: String,
        /// Why it cannot be saved.
        reason: String,
    },
    /// A kind that cannot be registered in an [`OperatorRegistry`](crate::OperatorRegistry).
    #[error("cannot register operator kind {kind:?}: {reason}")]
    Registry {
        /// The kind string offered.
        kind: String,
        /// Why it is refused (a built-in name, already registered, not a valid name).
        reason: String,
    },
    /// An operator failed one of the checks of [`crate::testing::check_operator`].
    #[error("operator {kind:?} fails the {check} check: {reason}")]
    Check {
        /// The operator's kind string.
        kind: String,
        /// Which check failed (`"shape"`, `"dot"`, `"autograd"`, `"linearity"`, `"persistence"`).
        check: &'static str,
        /// The measured value against its tolerance.
        reason: String,
    },
    /// A field that must be present in an observation file (or operator parameter set) is absent.
    #[error("missing field {field:?}")]
    MissingField {
        /// The field's name.
        field: String,
    },
    /// A field is present but unusable (wrong dtype, wrong shape, non-finite entries, bad encoding).
    #[error("field {field:?}: {reason}")]
    Field {
        /// The field's name.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The container format itself could not be read or written (npz/zip, npy header, safetensors header).
    #[error("{format}: {reason}")]
    Format {
        /// `"npz"` or `"safetensors"`.
        format: &'static str,
        /// The underlying message.
        reason: String,
    },
    /// Any of the above, with the file it concerns.
    #[error("{}: {source}", path.display())]
    File {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: Box<Error>,
    },
}

impl Error {
    /// Wraps `self` with the file it concerns.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        Error::File { path: path.into(), source: Box::new(self) }
    }

    /// Shorthand for [`Error::InvalidParameter`].
    pub(crate) fn param(op: &'static str, param: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { op, param: param.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Field`].
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Field { field: field.into(), reason: reason.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
