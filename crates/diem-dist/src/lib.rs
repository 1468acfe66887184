//! Collectives for data-parallel DiEM across processes, GPUs and nodes.
//!
//! DiEM's two steps parallelize differently. The E-step (one posterior sample per observation) is
//! embarrassingly parallel: each rank samples its own chunks. The M-step is data-parallel training: every
//! rank holds the same parameters, computes gradients on its local batch, and the gradients are averaged
//! across ranks before clipping and Adam, so every rank takes the same optimizer step. Both need only a
//! handful of collectives, which the [`Communicator`] trait names:
//!
//! | operation | used for |
//! | --- | --- |
//! | [`rank`](Communicator::rank), [`size`](Communicator::size), [`local_rank`](Communicator::local_rank) | sharding chunks; choosing the GPU of a rank |
//! | [`broadcast`](Communicator::broadcast) | the initial parameters (once per run) |
//! | [`all_reduce_mean`](Communicator::all_reduce_mean) | gradients, after backward and before clipping |
//! | [`all_gather_bytes`](Communicator::all_gather_bytes), [`all_gather_f64`](Communicator::all_gather_f64) | small host values: reports, fingerprints, errors ([`agree`]) |
//! | [`gather_rows`](Communicator::gather_rows) | the E-step's sample shards, to the rank that writes them |
//! | [`barrier`](Communicator::barrier) | phase boundaries |
//!
//! Back ends:
//! - [`Single`]: one process, no dependency; every collective is the identity.
//! - `Mpi` (cargo feature `mpi`, module `mpi`): rsmpi on the system MPI, tensors staged through host memory.
//! - `Nccl` (feature `nccl`, implies `mpi`, module `nccl`): MPI for rank, size and NCCL's unique id; NCCL
//!   all-reduce and broadcast of CUDA tensors in place, from the `libnccl.so.2` the PyTorch wheel ships.
//!
//! [`init`] picks the back end from a [`BackendChoice`] (the `DIEM_DIST` environment variable at the
//! binaries) and refuses to run as one of several launched ranks without MPI support, where every rank
//! would otherwise run the whole job alone.
//!
//! Errors: a failure on one rank must stop every rank with that error, never leave the others waiting in a
//! collective. [`agree`] is the phase-boundary check: every rank passes its local outcome, and either all
//! continue or all return an error that names the failing rank and carries its message.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod error;
#[cfg(feature = "mpi")]
mod host;
pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod single;

pub use error::{error_chain, DistError, Error, Result};
pub use launch::{decide, init, BackendChoice, Compiled, Launch};
pub use single::Single;

#[cfg(feature = "mpi")]
pub use crate::mpi::Mpi;
#[cfg(feature = "nccl")]
pub use crate::nccl::Nccl;

use tch::Tensor;

/// The back end behind a [`Communicator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One process.
    Single,
    /// MPI, tensors staged through host memory.
    Mpi,
    /// MPI for control, NCCL for CUDA tensors.
    Nccl,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Mpi => "mpi",
            Self::Nccl => "nccl",
        })
    }
}

/// The collectives data-parallel DiEM needs (see the crate docs). Every rank must call the same
/// collectives in the same order with matching arguments (shapes, dtypes, roots).
pub trait Communicator {
    /// The back end.
    fn backend(&self) -> Backend;

    /// This process's rank, `0 ≤ rank < size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// This process's rank among the ranks on its node (its GPU is `local_rank mod GPUs per node`).
    fn local_rank(&self) -> usize;

    /// Overwrites every tensor in place with its value on rank `root`. The tensors must have the same
    /// shapes and dtypes on every rank; they may live on any device.
    ///
    /// # Errors
    /// [`DistError::Tensor`] for a tensor that cannot be sent; back-end errors.
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()>;

    /// Replaces every tensor in place by its mean over the ranks. The result is bit-identical on every rank
    /// (floating-point sums depend on their order; the back ends fix one order for all ranks).
    ///
    /// # Errors
    /// [`DistError::Tensor`] for a tensor that is not floating point; back-end errors.
    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<()>;

    /// Every rank's `bytes` (of any length), in rank order, on every rank.
    ///
    /// # Errors
    /// Back-end errors.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Concatenates every rank's `rows` along dimension 0, in rank order, on rank `root` (`Some` there,
    /// `None` elsewhere). The row counts may differ between ranks; the trailing shape and the dtype may not.
    /// The result lives in host memory.
    ///
    /// # Errors
    /// [`DistError::Mismatch`] for different trailing shapes or dtypes; back-end errors.
    fn gather_rows(&self, rows: &Tensor, root: usize) -> Result<Option<Tensor>>;

    /// Returns once every rank has called it.
    ///
    /// # Errors
    /// Back-end errors.
    fn barrier(&self) -> Result<()>;

    /// Ends every rank's process at once with exit code `code`: the last resort after an error that the
    /// other ranks cannot learn of through [`agree`] (they may be waiting in a collective).
    fn abort(&self, code: i32) -> !;

    /// Whether this is rank 0, the rank that writes files and shows progress.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Every rank's `values`, in rank order, on every rank.
    ///
    /// # Errors
    /// As [`Communicator::all_gather_bytes`]; [`DistError::Mpi`] for a malformed message.
    fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.all_gather_bytes(&bytes)?
            .into_iter()
            .enumerate()
            .map(|(rank, b)| {
                if b.len() % 8 != 0 {
                    return Err(DistError::Mpi(format!(
                        "rank {rank} sent {} bytes, not f64 values",
                        b.len()
                    )));
                }
                Ok(b.chunks_exact(8)
                    .map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        f64::from_le_bytes(a)
                    })
                    .collect())
            })
            .collect()
    }
}

/// The outcome of [`agree`] on a rank whose phase did not succeed everywhere.
#[derive(Debug)]
pub enum Disagreement<E> {
    /// This rank failed with this error (the other ranks received its text).
    Local(E),
    /// Another rank failed ([`DistError::RankFailed`]), or the collective itself failed.
    Remote(DistError),
}

/// The phase-boundary check: every rank calls it at the same point with its local outcome. It returns
/// `Ok` on every rank when every rank succeeded; otherwise the failing rank gets its own error back
/// ([`Disagreement::Local`]) and every other rank gets [`DistError::RankFailed`] naming the first failing
/// rank with its error's text ([`Disagreement::Remote`]). So no rank continues into a collective that a
/// failed rank will never join.
///
/// # Errors
/// As described; [`Disagreement::Remote`] also when the exchange itself fails.
pub fn agree<T, E: std::error::Error>(
    comm: &dyn Communicator,
    local: std::result::Result<T, E>,
) -> std::result::Result<T, Disagreement<E>> {
    let message = match &local {
        Ok(_) => Vec::new(),
        Err(e) => {
            let mut m = vec![1u8];
            m.extend(error_chain(e).into_bytes());
            m
        }
    };
    let all = match comm.all_gather_bytes(&message) {
        Ok(all) => all,
        Err(e) => return Err(local.err().map_or(Disagreement::Remote(e), Disagreement::Local)),
    };
    let local = local.map_err(Disagreement::Local)?;
    match all.iter().enumerate().find(|(_, m)| !m.is_empty()) {
        None => Ok(local),
        Some((rank, m)) => Err(Disagreement::Remote(DistError::RankFailed {
            rank,
            size: comm.size(),
            message: String::from_utf8_lossy(&m[1..]).into_owned(),
        })),
    }
}

/// Checks that every rank holds the same `value` of `what` (a build fingerprint, a configuration, a data
/// fingerprint), so that mismatched ranks stop with a clear error instead of computing nonsense.
///
/// # Errors
/// [`DistError::Mismatch`] listing what each differing rank holds; back-end errors.
pub fn check_same(comm: &dyn Communicator, what: &str, value: &str) -> Result<()> {
    let all = comm.all_gather_bytes(value.as_bytes())?;
    let first = &all[0];
    let differing: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, v)| *v != first)
        .map(|(r, v)| format!("rank {r}: {}", String::from_utf8_lossy(v)))
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(DistError::Mismatch {
        what: what.to_string(),
        detail: format!("rank 0: {}; {}", String::from_utf8_lossy(first), differing.join("; ")),
    })
}

/// What identifies this build across ranks: the crate version, the compiled back ends and the libtorch
/// version (`tch`'s bound release). Ranks running different builds are refused by [`check_same`].
pub fn build_fingerprint() -> String {
    let mut backends = vec!["single"];
    if cfg!(feature = "mpi") {
        backends.push("mpi");
    }
    if cfg!(feature = "nccl") {
        backends.push("nccl");
    }
    format!("diem {} [{}]", env!("CARGO_PKG_VERSION"), backends.join(","))
}
