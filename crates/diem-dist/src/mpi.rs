//! [`Mpi`]: the MPI back end (rsmpi on the system's MPI), tensors staged through host memory.
//!
//! # How tensors travel
//!
//! [`broadcast`](Communicator::broadcast) and [`all_reduce_mean`](Communicator::all_reduce_mean) group the
//! tensors by dtype, copy each group into one flat CPU buffer (from any device, any strides), make one MPI
//! call per group (more only for groups over [`MAX_COUNT`] elements), and copy the results back in place.
//! Tensors that require gradients (parameters) are written under `no_grad`. The staging buffers are kept for
//! the next call of the same layout (at most four: about 0.5 GB on rank 0 for a 57.6 M-parameter model), so
//! that an M-step does not pay a fresh buffer's page faults at every step.
//!
//! The mean is a reduce (sum) to rank 0, a division by the number of ranks on rank 0 alone, and a broadcast
//! from rank 0: every rank receives rank 0's bits, so the result is bit-identical everywhere, which
//! `MPI_Allreduce` does not promise (its reduction order may differ between ranks). It moves about twice
//! the data of a ring all-reduce through rank 0; the GPU path (module `nccl`, feature `nccl`) uses NCCL instead.
//!
//! # Layout check
//!
//! Ranks calling a tensor collective with different shapes or dtypes would exchange garbage or hang. The
//! first [`broadcast`](Communicator::broadcast) and the first
//! [`all_reduce_mean`](Communicator::all_reduce_mean) on a communicator therefore all-gather a 24-byte
//! layout fingerprint (a hash of the root, every dtype and shape; the tensor count; the element count)
//! and fail with [`DistError::Mismatch`] on every rank when they differ. Later calls skip it: an M-step
//! calls the all-reduce with the same layout every step, and one more collective per step buys nothing
//! there. [`LayoutCheck::Always`] checks every call (a few microseconds each), for debugging.
//!
//! # Errors
//!
//! rsmpi leaves MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) in place, so an MPI failure ends the
//! job with MPI's own message rather than returning; the errors these methods return come from the checks
//! above and from libtorch.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use ::mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use ::mpi::datatype::PartitionMut;
use ::mpi::environment::Universe;
use ::mpi::topology::{Communicator as _, SimpleCommunicator};
use ::mpi::{Count, Threading};
use tch::{Kind, Tensor};

use crate::host::{self, HostBuf, Number, Pool};
use crate::{Backend, Communicator, DistError, Result};

/// The largest number of elements one MPI call moves: MPI counts and displacements are C `int`s. Larger
/// buffers go in pieces.
pub const MAX_COUNT: usize = i32::MAX as usize;

/// When tensor collectives check that every rank passes the same layout (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutCheck {
    /// On the first broadcast and the first all-reduce of a communicator (the default).
    #[default]
    First,
    /// On every call.
    Always,
}

/// The MPI back end: the world communicator of `MPI_COMM_WORLD`, tensors staged through host memory.
///
/// MPI can be initialized once per process: keep this value for the whole run. Dropping it finalizes MPI.
/// It is neither `Send` nor `Sync`: MPI is initialized with `MPI_THREAD_FUNNELED` (libtorch's worker
/// threads never call MPI), so every call must come from the thread that called [`Mpi::init`].
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    threading: Threading,
    max_count: usize,
    layout_check: LayoutCheck,
    /// Whether the first broadcast and the first all-reduce have been checked.
    checked: Cell<[bool; 2]>,
    /// Staging buffers kept between calls.
    pool: Pool,
    /// Neither `Send` nor `Sync` whatever the MPI's handle types (an `int` in MPICH): MPI runs funneled.
    _funneled: PhantomData<*const ()>,
    /// Last, so that it is dropped (`MPI_Finalize`) after the communicator.
    _universe: Universe,
}

impl fmt::Debug for Mpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("threading", &self.threading)
            .field("max_count", &self.max_count)
            .field("layout_check", &self.layout_check)
            .finish()
    }
}

/// The tensor collectives whose layouts [`Mpi`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Broadcast = 0,
    AllReduce = 1,
}

impl Op {
    /// The collective's name, as in errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::AllReduce => "all_reduce_mean",
        }
    }
}

impl Mpi {
    /// Initializes MPI (`MPI_Init_thread` asking for `MPI_THREAD_FUNNELED`) and returns the world
    /// communicator. The local rank is this rank's position on its node, from a shared-memory split of the
    /// world (`MPI_Comm_split_type` with `MPI_COMM_TYPE_SHARED`), ordered by world rank.
    ///
    /// # Errors
    /// [`DistError::Mpi`] when MPI was already initialized in this process (by an earlier `Mpi`, even one
    /// since dropped, or by other code): MPI cannot be initialized twice.
    pub fn init() -> Result<Self> {
        let Some((universe, threading)) = ::mpi::initialize_with_threading(Threading::Funneled) else {
            return Err(DistError::Mpi(
                "MPI is already initialized in this process; it can be initialized only once, so keep the \
                 first communicator for the whole run"
                    .into(),
            ));
        };
        let world = universe.world();
        let rank = to_usize(world.rank());
        let size = to_usize(world.size());
        let local_rank = to_usize(world.split_shared(world.rank()).rank());
        Ok(Self {
            world,
            rank,
            size,
            local_rank,
            threading,
            max_count: MAX_COUNT,
            layout_check: LayoutCheck::default(),
            checked: Cell::new([false; 2]),
            pool: Pool::default(),
            _funneled: PhantomData,
            _universe: universe,
        })
    }

    /// The thread support level MPI granted (asked: `Funneled`).
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// Sets when tensor collectives check the ranks' layouts. Every rank must set the same.
    pub fn set_layout_check(&mut self, check: LayoutCheck) {
        self.layout_check = check;
    }

    /// Sets the largest number of elements one MPI call moves, clamped to `1..=`[`MAX_COUNT`]: larger
    /// buffers go in pieces. Only tests need a smaller value (to exercise the pieces without gigabytes);
    /// every rank must set the same.
    pub fn set_max_count(&mut self, max_count: usize) {
        self.max_count = max_count.clamp(1, MAX_COUNT);
    }

    /// Checks the layout of a tensor collective across ranks when [`LayoutCheck`] says so. `with_device`
    /// adds each tensor's device type to the fingerprint (for back ends that route by device).
    pub(crate) fn check_layout(
        &self,
        op: Op,
        root: usize,
        tensors: &[Tensor],
        with_device: bool,
    ) -> Result<()> {
        let which = op as usize;
        let mut checked = self.checked.get();
        if self.layout_check == LayoutCheck::First && checked[which] {
            return Ok(());
        }
        checked[which] = true;
        self.checked.set(checked);
        let local = host::layout(op.name(), root, tensors, with_device)?;
        let mut all = vec![[0u64; 3]; self.size];
        self.world.all_gather_into(&local[..], flat_mut(&mut all));
        if all.iter().all(|l| *l == all[0]) {
            return Ok(());
        }
        let detail = all
            .iter()
            .enumerate()
            .map(|(r, l)| format!("rank {r}: {} tensors, {} elements, layout {:016x}", l[1], l[2], l[0]))
            .collect::<Vec<_>>()
            .join("; ");
        Err(DistError::Mismatch {
            what: format!("the tensors (shapes, dtypes, root) of {}", op.name()),
            detail,
        })
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size {
            return Err(DistError::Mpi(format!(
                "root rank {root} does not exist in a group of {}",
                self.size
            )));
        }
        Ok(())
    }

    /// Broadcasts bytes from `root` in pieces of at most `max_count` (no layout check).
    pub(crate) fn broadcast_raw(&self, bytes: &mut [u8], root: usize) {
        let process = self.world.process_at_rank(to_rank(root));
        for piece in bytes.chunks_mut(self.max_count) {
            process.broadcast_into(piece);
        }
    }

    /// The mean over ranks of a host buffer of `T`, in place: reduce to rank 0, divide there, broadcast.
    fn mean_in_place<T: Number>(&self, buf: &mut HostBuf) -> Result<()> {
        let root = self.world.process_at_rank(0);
        if self.rank == 0 {
            let mut sum = self.pool.take(T::KIND, buf.len())?;
            {
                let send = buf.slice::<T>()?;
                let recv = sum.slice_mut::<T>()?;
                for (s, r) in send.chunks(self.max_count).zip(recv.chunks_mut(self.max_count)) {
                    root.reduce_into_root(s, r, SystemOperation::sum());
                }
            }
            let _ = sum.tensor_mut().f_div_scalar_(self.size as f64)?;
            self.pool.put(std::mem::replace(buf, sum));
        } else {
            for s in buf.slice::<T>()?.chunks(self.max_count) {
                root.reduce_into(s, SystemOperation::sum());
            }
        }
        for piece in buf.slice_mut::<T>()?.chunks_mut(self.max_count) {
            root.broadcast_into(piece);
        }
        Ok(())
    }

    /// Every rank's `send` (of `lens[r]` bytes on rank `r`, known everywhere) on every rank, concatenated
    /// in rank order; in rounds when the total exceeds one MPI call.
    fn all_gather_known(&self, send: &[u8], lens: &[usize]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = lens.iter().map(|&n| Vec::with_capacity(n)).collect();
        for counts in rounds(lens, self.max_count) {
            let (c, d) = counts_displs(&counts);
            let start = out[self.rank].len();
            let mine = sendable(&send[start..start + counts[self.rank]]);
            let mut recv = vec![0u8; counts.iter().sum()];
            {
                let mut part = PartitionMut::new(&mut recv[..], &c[..], &d[..]);
                self.world.all_gather_varcount_into(mine, &mut part);
            }
            let mut offset = 0;
            for (r, n) in counts.iter().enumerate() {
                out[r].extend_from_slice(&recv[offset..offset + n]);
                offset += n;
            }
        }
        out
    }

    /// Gathers every rank's `send` (of `lens[r]` bytes on rank `r`) into `out` on `root`, rank after rank;
    /// `out` is `Some` (of the total length) on `root` only.
    fn gather_known(&self, send: &[u8], lens: &[usize], root: usize, out: Option<&mut [u8]>) {
        let process = self.world.process_at_rank(to_rank(root));
        let total: usize = lens.iter().sum();
        if total == 0 {
            // Nothing to move (and MPI rejects the equal dangling pointers of two empty slices).
            return;
        }
        if total <= self.max_count {
            let send = sendable(send);
            // One call, straight into the result.
            match out {
                Some(out) => {
                    let (c, d) = counts_displs(lens);
                    let mut part = PartitionMut::new(out, &c[..], &d[..]);
                    process.gather_varcount_into_root(send, &mut part);
                }
                None => process.gather_varcount_into(send),
            }
            return;
        }
        // Rounds of at most max_count bytes in all, through a staging buffer on the root.
        let starts: Vec<usize> = lens.iter().scan(0, |s, &n| Some(std::mem::replace(s, *s + n))).collect();
        let mut done = vec![0usize; lens.len()];
        let mut out = out;
        for counts in rounds(lens, self.max_count) {
            let mine = sendable(&send[done[self.rank]..done[self.rank] + counts[self.rank]]);
            match out.as_deref_mut() {
                Some(out) => {
                    let (c, d) = counts_displs(&counts);
                    let mut recv = vec![0u8; counts.iter().sum()];
                    {
                        let mut part = PartitionMut::new(&mut recv[..], &c[..], &d[..]);
                        process.gather_varcount_into_root(mine, &mut part);
                    }
                    let mut offset = 0;
                    for (r, &n) in counts.iter().enumerate() {
                        let at = starts[r] + done[r];
                        out[at..at + n].copy_from_slice(&recv[offset..offset + n]);
                        offset += n;
                    }
                }
                None => process.gather_varcount_into(mine),
            }
            for (d, n) in done.iter_mut().zip(&counts) {
                *d += n;
            }
        }
    }
}

/// Per-round byte counts for moving `lens[r]` bytes from each rank `r` with at most `max_count` bytes in
/// all per call: one round when everything fits, else rounds of at most `max_count / ranks` per rank.
/// Every rank computes the same rounds from the same `lens`. Empty when there is nothing to move.
fn rounds(lens: &[usize], max_count: usize) -> Vec<Vec<usize>> {
    let total: usize = lens.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    if total <= max_count {
        return vec![lens.to_vec()];
    }
    let piece = (max_count / lens.len().max(1)).max(1);
    let longest = lens.iter().copied().max().unwrap_or(0);
    (0..longest.div_ceil(piece))
        .map(|k| lens.iter().map(|&n| n.saturating_sub(k * piece).min(piece)).collect())
        .collect()
}

/// `bytes`, or an empty slice at a real address when `bytes` is empty. An empty Rust slice of bytes points at
/// address 1, which Open MPI reads as `MPI_IN_PLACE` (`(void *) 1`): sending it makes `MPI_Gatherv` fail.
fn sendable(bytes: &[u8]) -> &[u8] {
    static NOTHING: [u8; 1] = [0];
    if bytes.is_empty() {
        &NOTHING[..0]
    } else {
        bytes
    }
}

/// MPI counts and displacements for consecutive blocks of `counts` (whose sum fits a C `int`).
fn counts_displs(counts: &[usize]) -> (Vec<Count>, Vec<Count>) {
    let c: Vec<Count> = counts.iter().map(|&n| to_rank(n)).collect();
    let d: Vec<Count> =
        counts.iter().scan(0usize, |s, &n| Some(to_rank(std::mem::replace(s, *s + n)))).collect();
    (c, d)
}

/// An MPI rank or count as `usize` (MPI returns non-negative values here).
fn to_usize(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

/// A `usize` known to fit a C `int` (ranks; counts bounded by [`MAX_COUNT`]) as an MPI `int`.
fn to_rank(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A slice of fixed-size arrays as one flat slice.
fn flat_mut(v: &mut [[u64; 3]]) -> &mut [u64] {
    v.as_flattened_mut()
}

/// Splits a list of equal-length records encoded as little-endian `u64` words.
fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

/// Checks that a tensor's dtype can be averaged over host memory.
fn check_mean_kind(op: &'static str, index: usize, kind: Kind) -> Result<()> {
    match kind {
        Kind::Float | Kind::Double => Ok(()),
        Kind::Half | Kind::BFloat16 => Err(DistError::Tensor {
            op,
            index,
            reason: format!(
                "the MPI back end averages f32 and f64 tensors only, got {kind:?}; keep gradients in f32"
            ),
        }),
        _ => Err(DistError::Tensor {
            op,
            index,
            reason: format!("a mean needs a floating-point tensor, got {kind:?}"),
        }),
    }
}

impl Communicator for Mpi {
    fn backend(&self) -> Backend {
        Backend::Mpi
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        self.check_root(root)?;
        // The layout check comes first: it also catches a rank whose tensors fail the local checks below
        // (on the calls it runs), so that no rank is left waiting in a collective.
        self.check_layout(Op::Broadcast, root, tensors, false)?;
        let groups = host::groups("broadcast", tensors, |_, _| true)?;
        if self.size == 1 {
            return Ok(());
        }
        tch::no_grad(|| {
            for group in &groups {
                // The root sends its values; the others receive into a buffer of the same size.
                let mut buf = if self.rank == root {
                    self.pool.stage(tensors, group)?
                } else {
                    self.pool.take(group.kind, group.numel)?
                };
                self.broadcast_raw(buf.bytes_mut(), root);
                if self.rank != root {
                    buf.unstage(tensors, group)?;
                }
                self.pool.put(buf);
            }
            Ok(())
        })
    }

    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<()> {
        self.check_layout(Op::AllReduce, 0, tensors, false)?;
        let groups = host::groups("all_reduce_mean", tensors, |_, _| true)?;
        for g in &groups {
            check_mean_kind("all_reduce_mean", g.indices[0], g.kind)?;
        }
        if self.size == 1 {
            return Ok(());
        }
        tch::no_grad(|| {
            for group in &groups {
                let mut buf = self.pool.stage(tensors, group)?;
                match group.kind {
                    Kind::Double => self.mean_in_place::<f64>(&mut buf)?,
                    _ => self.mean_in_place::<f32>(&mut buf)?,
                }
                buf.unstage(tensors, group)?;
                self.pool.put(buf);
            }
            Ok(())
        })
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut lens = vec![0u64; self.size];
        self.world.all_gather_into(&(bytes.len() as u64), &mut lens[..]);
        let lens: Vec<usize> = lens.into_iter().map(|n| n as usize).collect();
        Ok(self.all_gather_known(bytes, &lens))
    }

    fn gather_rows(&self, rows: &Tensor, root: usize) -> Result<Option<Tensor>> {
        if !rows.defined() || rows.dim() == 0 {
            return Err(DistError::Tensor {
                op: "gather_rows",
                index: 0,
                reason: "the rows must be a tensor of at least one dimension".into(),
            });
        }
        // Every rank learns every rank's (root, dtype, trailing shape, rows) and checks them alike, so
        // they all return the same error instead of some waiting in the gather.
        let kind = rows.f_kind()?;
        let size = rows.size();
        let mut desc: Vec<u64> = vec![root as u64, host::kind_code(kind), size.len() as u64];
        desc.extend(size.iter().map(|&d| d as u64));
        let desc_bytes: Vec<u8> = desc.iter().flat_map(|w| w.to_le_bytes()).collect();
        let all: Vec<Vec<u64>> = self.all_gather_bytes(&desc_bytes)?.iter().map(|b| words(b)).collect();
        let describe = |d: &[u64]| -> String {
            let kind = d.get(1).and_then(|&c| host::kind_from_code(c));
            let dims: Vec<u64> = d.get(3..).map(<[u64]>::to_vec).unwrap_or_default();
            format!("root {}, {kind:?}, shape {dims:?}", d.first().copied().unwrap_or(u64::MAX))
        };
        // Root, dtype, rank and trailing dimensions must agree; the first dimension (rows) may not.
        let key = |d: &[u64]| -> Vec<u64> {
            let mut k = d.get(..3).map(<[u64]>::to_vec).unwrap_or_default();
            k.extend(d.get(4..).unwrap_or_default());
            k
        };
        if all.iter().any(|d| d.len() < 4 || key(d) != key(&all[0])) {
            let detail = all
                .iter()
                .enumerate()
                .map(|(r, d)| format!("rank {r}: {}", describe(d)))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(DistError::Mismatch {
                what: "gather_rows (root, dtype and trailing shape must agree)".into(),
                detail,
            });
        }
        self.check_root(root)?;
        let row_numel: usize = size[1..].iter().map(|&d| d as usize).product();
        let row_bytes = row_numel * kind.elt_size_in_bytes();
        let row_counts: Vec<usize> = all.iter().map(|d| d[3] as usize).collect();
        let lens: Vec<usize> = row_counts.iter().map(|&n| n * row_bytes).collect();
        let total_rows: usize = row_counts.iter().sum();
        tch::no_grad(|| {
            let send = HostBuf::from_tensor(rows)?;
            let mut shape = size.clone();
            shape[0] = total_rows as i64;
            if self.rank == root {
                let mut out = HostBuf::zeros(kind, total_rows * row_numel)?;
                self.gather_known(send.bytes(), &lens, root, Some(out.bytes_mut()));
                Ok(Some(out.into_tensor(&shape)?))
            } else {
                self.gather_known(send.bytes(), &lens, root, None);
                Ok(None)
            }
        })
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_large_gathers_and_keep_small_ones_whole() {
        assert!(rounds(&[0, 0], 10).is_empty());
        assert_eq!(rounds(&[3, 5], 10), vec![vec![3, 5]]);
        // 12 bytes do not fit 10: rounds of at most 5 per rank.
        assert_eq!(rounds(&[2, 10], 10), vec![vec![2, 5], vec![0, 5]]);
        // Three ranks and 3 bytes a call: one byte per rank per round.
        let r = rounds(&[7, 1, 0], 3);
        assert_eq!((r.len(), &r[0], &r[6]), (7, &vec![1, 1, 0], &vec![1, 0, 0]));
        for lens in [vec![9usize, 4, 11], vec![1, 0, 30]] {
            let r = rounds(&lens, 8);
            for round in &r {
                assert!(round.iter().sum::<usize>() <= 8);
            }
            let sums: Vec<usize> = (0..lens.len()).map(|i| r.iter().map(|c| c[i]).sum()).collect();
            assert_eq!(sums, lens);
        }
        assert_eq!(counts_displs(&[3, 0, 4]), (vec![3, 0, 4], vec![0, 3, 3]));
    }

    #[test]
    fn mean_kinds() {
        assert!(check_mean_kind("m", 0, Kind::Float).is_ok());
        assert!(check_mean_kind("m", 0, Kind::Double).is_ok());
        assert!(matches!(check_mean_kind("m", 2, Kind::BFloat16), Err(DistError::Tensor { index: 2, .. })));
        assert!(matches!(check_mean_kind("m", 0, Kind::Int64), Err(DistError::Tensor { .. })));
    }
}
