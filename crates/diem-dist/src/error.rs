//! The crate's error type.

/// Everything that can go wrong in a collective or in setting one up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another rank failed; its error is carried as text so every rank can report it.
    #[error("rank {rank} of {size} failed: {message}")]
    RankFailed {
        /// The (first) failing rank.
        rank: usize,
        /// The number of ranks.
        size: usize,
        /// Its error, with causes.
        message: String,
    },
    /// The ranks hold different values where they must agree (builds, configurations, data).
    #[error("the ranks disagree on {what}: {detail}")]
    Mismatch {
        /// What differs.
        what: String,
        /// Which ranks hold what.
        detail: String,
    },
    /// A back end was requested that this build does not contain.
    #[error("the {backend} back end is not compiled into this build: rebuild with `--features {feature}`")]
    NotCompiled {
        /// The back end requested.
        backend: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The process was started by a parallel launcher as one of several ranks, but without MPI support
    /// every rank would run the whole job alone (and write the same files).
    #[error(
        "started as rank {rank} of {size} by {launcher}, but this build has no MPI support: rebuild with \
         `--features diem-dist/mpi` (or run a single process)"
    )]
    LauncherWithoutMpi {
        /// Who launched it (the environment variable that told).
        launcher: String,
        /// This process's rank.
        rank: usize,
        /// The number of ranks launched.
        size: usize,
    },
    /// A value of the `DIEM_DIST` environment variable (or a `--dist` flag) that names no back end.
    #[error("invalid back end {value:?}: expected auto, single, mpi or nccl")]
    Parse {
        /// The text given.
        value: String,
    },
    /// A tensor cannot take part in a collective as given.
    #[error("collective {op}, tensor {index}: {reason}")]
    Tensor {
        /// The collective.
        op: &'static str,
        /// The position of the tensor in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The MPI library reported an error or cannot be used.
    #[error("MPI: {0}")]
    Mpi(String),
    /// The NCCL library cannot be loaded or reported an error.
    #[error("NCCL: {0}")]
    Nccl(String),
    /// A libtorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The old name of [`Error`], kept so that code written against it compiles: every crate of the workspace
/// names its error `Error` and its result `Result` at its root (`diem_dist::Error`).
pub type DistError = Error;

/// An error with all its causes, `outer: cause: cause`, as sent to other ranks.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        // thiserror's `transparent` and `{source}` formats already include the cause: do not repeat it.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
