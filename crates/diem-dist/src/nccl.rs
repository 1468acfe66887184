//! [`Nccl`]: MPI for control, NCCL (through cudarc) for CUDA tensors.
//!
//! Rank 0 creates NCCL's unique id and MPI broadcasts it; every rank then joins one NCCL communicator on its
//! GPU, `local_rank mod GPUs on the node` (NCCL refuses two ranks on one GPU). CUDA tensors on that GPU are
//! broadcast and averaged by NCCL on the device; everything else (CPU tensors, host values, gathers,
//! barriers) goes through the inner [`Mpi`].
//!
//! # Streams
//!
//! NCCL's operations are enqueued on the legacy default stream (the null stream handle) of the rank's GPU.
//! That is the stream libtorch computes on unless a program selects another one, which tch does not expose:
//! the collective runs after the kernels that produced the gradients and before those that read them, with
//! no host synchronization.
//!
//! # Loading NCCL
//!
//! cudarc loads `libnccl` at its first NCCL call and panics when it finds none under the names it tries
//! (`libnccl.so`, … — not `libnccl.so.2`, the one name the PyTorch wheel ships). [`Nccl::init`] therefore
//! checks first that the library loads under one of those names and returns [`DistError::Nccl`] with what
//! was searched and how to fix it; `cargo xtask setup` creates the `libnccl.so` symlink beside the wheel's
//! library and `cargo xtask env` puts its folder on `LD_LIBRARY_PATH`. Every cudarc call of the set-up runs
//! under `catch_unwind` as well, so a panic in cudarc becomes an error.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::driver::CudaContext;
use cudarc::nccl::{result as nccl, sys};
use tch::{Device, Kind, Tensor};

use crate::host;
use crate::mpi::{Mpi, Op};
use crate::{agree, Backend, Communicator, Disagreement, DistError, Launch, Result};

/// The environment variable the dynamic loader searches (where the NCCL advice points).
const LIBRARY_PATH: &str = "LD_LIBRARY_PATH";

/// The NCCL back end: an [`Mpi`] for control and host values, an NCCL communicator for CUDA tensors.
///
/// Like [`Mpi`], one per process, neither `Send` nor `Sync`; dropping it aborts the NCCL communicator
/// (`ncclCommAbort`, which never waits for other ranks) and then finalizes MPI.
pub struct Nccl {
    /// First, so that it is dropped before the CUDA context and before MPI is finalized.
    comm: RawComm,
    _ctx: Arc<CudaContext>,
    mpi: Mpi,
    device: Device,
    devices: usize,
    version: i32,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("mpi", &self.mpi)
            .field("device", &self.device)
            .field("devices", &self.devices)
            .field("version", &self.version)
            .finish()
    }
}

/// An NCCL communicator handle, aborted on drop.
struct RawComm(sys::ncclComm_t);

impl Drop for RawComm {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `self.0` is the communicator `ncclCommInitRank` created for this value, used by no one
        // else and aborted exactly once, here. Abort (unlike destroy) returns without waiting for other
        // ranks, so dropping never hangs on a rank that has failed.
        let _ = unsafe { nccl::comm_abort(self.0) };
    }
}

/// Runs a cudarc call, turning a panic (cudarc's loaders panic on a missing library) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(DistError::Nccl(format!("{what}: cudarc panicked: {text}")))
        }
    }
}

fn nccl_error(what: &str, e: nccl::NcclError) -> DistError {
    DistError::Nccl(format!("{what} failed: {:?}", e.0))
}

/// One error from [`agree`] on a set-up step: this rank's own, or the failing rank's.
fn flatten(d: Disagreement<DistError>) -> DistError {
    match d {
        Disagreement::Local(e) | Disagreement::Remote(e) => e,
    }
}

/// The NCCL data type of a floating-point dtype NCCL can average.
fn float_type(kind: Kind) -> Option<sys::ncclDataType_t> {
    match kind {
        Kind::Float => Some(sys::ncclDataType_t::ncclFloat32),
        Kind::Double => Some(sys::ncclDataType_t::ncclFloat64),
        Kind::Half => Some(sys::ncclDataType_t::ncclFloat16),
        Kind::BFloat16 => Some(sys::ncclDataType_t::ncclBfloat16),
        _ => None,
    }
}

/// The names cudarc's loader tries for NCCL, in its order.
pub fn library_candidates() -> Vec<String> {
    cudarc::get_lib_name_candidates("nccl")
}

/// What to tell someone whose NCCL library cannot be loaded: the names tried, the folders of
/// `LD_LIBRARY_PATH` searched, any `libnccl.so*` found there under another name, and the fix.
pub fn library_advice(candidates: &[String], dirs: &[PathBuf]) -> String {
    let found: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnccl.so")))
        .collect();
    let searched = if dirs.is_empty() {
        format!("{LIBRARY_PATH} is empty")
    } else {
        format!(
            "{LIBRARY_PATH} holds {}",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
        )
    };
    let mut names: Vec<&str> = Vec::new();
    for c in candidates {
        if !names.contains(&c.as_str()) {
            names.push(c);
        }
    }
    let mut text = format!(
        "cannot load the NCCL library: cudarc looks for {} through the dynamic loader, and {searched}. ",
        names.join(", ")
    );
    match found.iter().find(|p| !candidates.iter().any(|c| p.file_name().is_some_and(|n| n == c.as_str()))) {
        Some(lib) => {
            let dir = lib.parent().unwrap_or(Path::new("."));
            let name = lib.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            text.push_str(&format!(
                "{} exists, under a name cudarc does not try: link it with `ln -s {name} {}` \
                 (`cargo xtask setup` does this for the PyTorch wheel's copy).",
                lib.display(),
                dir.join("libnccl.so").display()
            ));
        }
        None => text.push_str(
            "The PyTorch wheel ships nvidia/nccl/lib/libnccl.so.2: `cargo xtask setup` links libnccl.so to it \
             and `eval \"$(cargo xtask env)\"` puts that folder on LD_LIBRARY_PATH; elsewhere, install NCCL 2.28 \
             or later and make libnccl.so findable.",
        ),
    }
    text
}

/// Checks that cudarc will find NCCL: the library loads under one of [`library_candidates`].
#[allow(unsafe_code)]
fn check_library() -> Result<()> {
    // SAFETY: `is_culib_present` dlopens each candidate name in turn (running the library's initializers,
    // as the first NCCL call would anyway) and closes it again; it has no other precondition.
    let present = guarded("searching for libnccl", || Ok(unsafe { sys::is_culib_present() }))?;
    if present {
        return Ok(());
    }
    let dirs: Vec<PathBuf> =
        std::env::var_os(LIBRARY_PATH).map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    Err(DistError::Nccl(library_advice(&library_candidates(), &dirs)))
}

/// The checks a rank can make alone: a CUDA device and a loadable NCCL. Returns the number of devices.
fn preflight() -> Result<usize> {
    let devices = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if devices == 0 {
        return Err(DistError::Nccl(
            "no CUDA device is visible to libtorch (tch::Cuda::device_count() is 0): NCCL needs a GPU per \
             rank; on CPUs use the MPI back end (DIEM_DIST=mpi)"
                .into(),
        ));
    }
    check_library()?;
    Ok(devices)
}

impl Nccl {
    /// Starts MPI, then NCCL on this rank's GPU (`local_rank mod` the GPUs libtorch sees).
    ///
    /// The checks a rank can make alone (a CUDA device, a loadable NCCL) come first: without a launcher
    /// of several ranks their failure returns at once, before MPI is initialized. Under a launcher every
    /// rank initializes MPI and the ranks [`agree`] on each step, so all of them return the first failing
    /// rank's error instead of waiting for it.
    ///
    /// # Errors
    /// [`DistError::Nccl`]: no CUDA device; NCCL not loadable (the message says what was searched and how
    /// to fix it); CUDA or NCCL failures (for example two ranks on one GPU). [`DistError::RankFailed`] for
    /// another rank's failure, [`DistError::Mpi`] when MPI was already initialized.
    pub fn init() -> Result<Self> {
        let launched = Launch::detect().is_some_and(|l| l.size > 1);
        let local = match preflight() {
            Err(e) if !launched => return Err(e),
            other => other,
        };
        let mpi = Mpi::init()?;
        let devices = agree(&mpi, local).map_err(flatten)?;
        let (rank, size) = (mpi.rank(), mpi.size());
        let ordinal = mpi.local_rank() % devices;

        // The CUDA context (binds the GPU to this thread for NCCL) and, on rank 0, the unique id.
        let step = guarded("starting CUDA and NCCL", || {
            let ctx = CudaContext::new(ordinal)
                .map_err(|e| DistError::Nccl(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
            let version = nccl::get_nccl_version().map_err(|e| nccl_error("ncclGetVersion", e))?;
            let id = if rank == 0 {
                Some(nccl::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?)
            } else {
                None
            };
            Ok((ctx, version, id))
        });
        let (ctx, version, id) = agree(&mpi, step).map_err(flatten)?;
        let mut id_bytes: Vec<u8> =
            id.map(|id| id.internal.iter().map(|&c| c as u8).collect()).unwrap_or_else(|| vec![0; 128]);
        mpi.broadcast_raw(&mut id_bytes, 0);
        let mut internal = [0 as std::ffi::c_char; 128];
        for (dst, src) in internal.iter_mut().zip(&id_bytes) {
            *dst = *src as std::ffi::c_char;
        }
        let id = sys::ncclUniqueId { internal };

        let created = guarded("ncclCommInitRank", || Self::create(&ctx, id, rank, size, ordinal, devices));
        let comm = agree(&mpi, created).map_err(flatten)?;
        Ok(Self { comm, _ctx: ctx, mpi, device: Device::Cuda(ordinal), devices, version })
    }

    #[allow(unsafe_code)]
    fn create(
        ctx: &CudaContext,
        id: sys::ncclUniqueId,
        rank: usize,
        size: usize,
        ordinal: usize,
        devices: usize,
    ) -> Result<RawComm> {
        ctx.bind_to_thread()
            .map_err(|e| DistError::Nccl(format!("cannot bind CUDA device {ordinal}: {e:?}")))?;
        let as_int =
            |v: usize| i32::try_from(v).map_err(|_| DistError::Nccl(format!("{v} ranks are too many")));
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid place for the handle; `id` came from rank 0's `ncclGetUniqueId`, the same
        // on every rank; rank and size are this process's MPI rank and the world size, which every rank
        // passes alike; the CUDA device is bound to this thread just above, as NCCL requires.
        let made = unsafe { nccl::comm_init_rank(&mut comm, as_int(size)?, id, as_int(rank)?) };
        made.map_err(|e| {
            DistError::Nccl(format!(
                "ncclCommInitRank on CUDA device {ordinal} (rank {rank} of {size}, {devices} GPUs on this node) \
                 failed: {:?}; NCCL needs one GPU per rank: launch at most {devices} ranks per node",
                e.0
            ))
        })?;
        Ok(RawComm(comm))
    }

    /// This rank's CUDA device, where its NCCL communicator lives and where its model should be.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The NCCL library's version code (e.g. 22809 for 2.28.9).
    pub fn version(&self) -> i32 {
        self.version
    }

    /// The inner MPI communicator.
    pub fn mpi(&self) -> &Mpi {
        &self.mpi
    }

    /// The positions of the tensors NCCL handles (on this rank's GPU) and of the others; a tensor on another
    /// GPU is an error.
    fn route(&self, op: &'static str, tensors: &[Tensor]) -> Result<(Vec<usize>, Vec<usize>)> {
        let (mut gpu, mut cpu) = (Vec::new(), Vec::new());
        for (index, t) in tensors.iter().enumerate() {
            if !t.defined() {
                return Err(DistError::Tensor { op, index, reason: "the tensor is undefined".into() });
            }
            match t.device() {
                d if d == self.device => gpu.push(index),
                Device::Cuda(other) => {
                    return Err(DistError::Tensor {
                        op,
                        index,
                        reason: format!(
                            "the tensor is on cuda:{other}, but this rank's NCCL communicator is on {:?}",
                            self.device
                        ),
                    })
                }
                _ => cpu.push(index),
            }
        }
        Ok((gpu, cpu))
    }

    /// Runs a host collective of the inner [`Mpi`] on the tensors at `indices`, in place (through shallow
    /// clones, which share the tensors' storage).
    fn on_host(
        &self,
        tensors: &[Tensor],
        indices: &[usize],
        f: impl FnOnce(&Mpi, &mut [Tensor]) -> Result<()>,
    ) -> Result<()> {
        if indices.is_empty() {
            return Ok(());
        }
        let mut sub: Vec<Tensor> = indices.iter().map(|&i| tensors[i].shallow_clone()).collect();
        f(&self.mpi, &mut sub)
    }

    /// One NCCL collective per dtype group of the tensors at `gpu`: the group flattened into one CUDA
    /// buffer (the tensor itself when it is alone and contiguous), `call` on it, then `after` (in place on
    /// the buffer), then copied back.
    fn per_group(
        &self,
        op: &'static str,
        tensors: &mut [Tensor],
        gpu: &[usize],
        call: impl Fn(&RawComm, &Tensor, Kind, usize) -> Result<()>,
        after: impl Fn(&mut Tensor) -> Result<()>,
    ) -> Result<()> {
        let groups = host::groups(op, tensors, |i, _| gpu.contains(&i))?;
        tch::no_grad(|| {
            for g in &groups {
                let direct = g.indices.len() == 1 && tensors[g.indices[0]].is_contiguous();
                let mut flat = if direct {
                    tensors[g.indices[0]].shallow_clone()
                } else {
                    let parts: Vec<Tensor> =
                        g.indices.iter().map(|&i| tensors[i].f_reshape([-1])).collect::<Result<_, _>>()?;
                    Tensor::f_cat(&parts, 0)?
                };
                if g.numel > 0 {
                    call(&self.comm, &flat, g.kind, g.numel)?;
                }
                after(&mut flat)?;
                if !direct {
                    let mut offset = 0i64;
                    for &i in &g.indices {
                        let t = &mut tensors[i];
                        let n = t.numel() as i64;
                        if n > 0 {
                            t.f_copy_(&flat.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?)?;
                        }
                        offset += n;
                    }
                }
            }
            Ok(())
        })
    }
}

/// The legacy default stream (see the module docs).
fn default_stream() -> sys::cudaStream_t {
    std::ptr::null_mut()
}

/// NCCL broadcast of `bytes` bytes in place in `flat` from `root`.
#[allow(unsafe_code)]
fn nccl_broadcast(comm: &RawComm, flat: &Tensor, bytes: usize, root: i32) -> Result<()> {
    let ptr = flat.data_ptr();
    // SAFETY: `flat` is a contiguous CUDA tensor on the communicator's device (the caller routes only such
    // tensors here) holding at least `bytes` bytes at `ptr`, and it outlives the operation's place in the
    // stream: libtorch's caching allocator reuses its memory only in the order of the same (default) stream.
    // NCCL allows send = receive buffer (in place). Every rank passes the same count and root (the layouts
    // are checked).
    let r = unsafe {
        nccl::broadcast(
            ptr.cast_const(),
            ptr,
            bytes,
            sys::ncclDataType_t::ncclUint8,
            root,
            comm.0,
            default_stream(),
        )
    };
    r.map(|_| ()).map_err(|e| nccl_error("ncclBroadcast", e))
}

/// NCCL sum of the `numel` elements of `kind` in `flat`, in place.
#[allow(unsafe_code)]
fn nccl_sum(comm: &RawComm, flat: &Tensor, kind: Kind, numel: usize) -> Result<()> {
    let dtype = float_type(kind).ok_or_else(|| DistError::Nccl(format!("{kind:?} cannot be reduced")))?;
    let ptr = flat.data_ptr();
    // SAFETY: as in `nccl_broadcast`, with `numel` elements of `dtype` (the tensor's own dtype) at `ptr`.
    // NCCL's sum (ring or tree) reduces each element once and then sends the result to every rank, so the
    // sums are bit-identical across ranks, and so are the quotients the caller computes from them.
    let r = unsafe {
        nccl::all_reduce(
            ptr.cast_const(),
            ptr,
            numel,
            dtype,
            sys::ncclRedOp_t::ncclSum,
            comm.0,
            default_stream(),
        )
    };
    r.map(|_| ()).map_err(|e| nccl_error("ncclAllReduce", e))
}

impl Communicator for Nccl {
    fn backend(&self) -> Backend {
        Backend::Nccl
    }

    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn size(&self) -> usize {
        self.mpi.size()
    }

    fn local_rank(&self) -> usize {
        self.mpi.local_rank()
    }

    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(DistError::Mpi(format!(
                "root rank {root} does not exist in a group of {}",
                self.size()
            )));
        }
        self.mpi.check_layout(Op::Broadcast, root, tensors, true)?;
        let (gpu, cpu) = self.route("broadcast", tensors)?;
        self.on_host(tensors, &cpu, |m, sub| m.broadcast(sub, root))?;
        let root = i32::try_from(root).unwrap_or(i32::MAX);
        self.per_group(
            "broadcast",
            tensors,
            &gpu,
            |comm, flat, kind, numel| nccl_broadcast(comm, flat, numel * kind.elt_size_in_bytes(), root),
            |_| Ok(()),
        )
    }

    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<()> {
        self.mpi.check_layout(Op::AllReduce, 0, tensors, true)?;
        let (gpu, cpu) = self.route("all_reduce_mean", tensors)?;
        for &i in &gpu {
            let kind = tensors[i].f_kind()?;
            if float_type(kind).is_none() {
                return Err(DistError::Tensor {
                    op: "all_reduce_mean",
                    index: i,
                    reason: format!("a mean needs a floating-point tensor, got {kind:?}"),
                });
            }
        }
        self.on_host(tensors, &cpu, |m, sub| m.all_reduce_mean(sub))?;
        let size = self.size() as f64;
        self.per_group("all_reduce_mean", tensors, &gpu, nccl_sum, |flat| {
            let _ = flat.f_div_scalar_(size)?;
            Ok(())
        })
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.mpi.all_gather_bytes(bytes)
    }

    fn gather_rows(&self, rows: &Tensor, root: usize) -> Result<Option<Tensor>> {
        self.mpi.gather_rows(rows, root)
    }

    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_without_a_gpu_is_a_clear_error() {
        if tch::Cuda::device_count() > 0 {
            println!("skipped: a CUDA device is visible (this test checks the GPU-less error)");
            return;
        }
        if Launch::detect().is_some_and(|l| l.size > 1) {
            println!("skipped: running under a launcher of several ranks");
            return;
        }
        match Nccl::init() {
            Err(DistError::Nccl(m)) => assert!(m.contains("no CUDA device"), "{m}"),
            other => panic!("expected a clear NCCL error, got {other:?}"),
        }
    }

    #[test]
    fn advice_names_the_search_and_the_symlink() {
        let dir = std::env::temp_dir().join(format!("diem-dist-nccl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libnccl.so.2"), b"").unwrap();
        let candidates = library_candidates();
        assert!(candidates.contains(&"libnccl.so".to_string()));
        assert!(
            !candidates.contains(&"libnccl.so.2".to_string()),
            "cudarc now tries libnccl.so.2: drop the symlink"
        );
        let advice = library_advice(&candidates, std::slice::from_ref(&dir));
        assert!(advice.contains("libnccl.so,"), "{advice}");
        assert!(advice.contains(&dir.display().to_string()), "{advice}");
        assert!(
            advice.contains(&format!("ln -s libnccl.so.2 {}", dir.join("libnccl.so").display())),
            "{advice}"
        );
        let none = library_advice(&candidates, &[]);
        assert!(none.contains("LD_LIBRARY_PATH is empty") && none.contains("cargo xtask setup"), "{none}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_library_check_loads_what_the_loader_path_offers() {
        // With `cargo xtask` (symlink made, folder on LD_LIBRARY_PATH) the wheel's NCCL loads, GPU or not;
        // without a libnccl.so on the path the check fails with the advice instead of cudarc's panic.
        let dirs: Vec<PathBuf> =
            std::env::var_os(LIBRARY_PATH).map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
        let offered = dirs.iter().any(|d| d.join("libnccl.so").is_file());
        match check_library() {
            Ok(()) => println!("libnccl loads (offered on {LIBRARY_PATH}: {offered})"),
            Err(DistError::Nccl(m)) => {
                assert!(!offered, "libnccl.so is on {LIBRARY_PATH} but does not load: {m}");
                assert!(m.contains("cudarc looks for libnccl.so"), "{m}");
                println!("libnccl does not load: {m}");
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn only_floats_are_averaged() {
        assert!(float_type(Kind::Float).is_some() && float_type(Kind::BFloat16).is_some());
        assert!(float_type(Kind::Int64).is_none());
    }
}
