//! Exercises every collective of the MPI back end under a real launcher, with rank-dependent data; the
//! integration test `tests/mpi.rs` runs it with `mpirun -np 1` and `-np 2` and reads what it prints.
//!
//! ```text
//! mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 target/debug/diem-dist-check collectives
//! ```
//!
//! Modes (first argument):
//! - `collectives [MAX_COUNT]`: broadcast, all-reduce mean (correct and bit-identical: each rank prints a hash
//!   of its result), all-gather of bytes of different lengths, gather of unequal row counts, the mismatch
//!   checks, a refused second `Mpi::init`. With `MAX_COUNT`, every MPI call moves at most that many elements,
//!   which exercises the pieces that buffers over 2^31 - 1 elements take.
//! - `agree-fail`: the last rank fails a phase; every rank must leave through [`diem_dist::agree`] with an
//!   error naming it.
//! - `abort`: the last rank calls `abort(3)` while the others wait in a barrier.
//! - `auto`: [`diem_dist::init`] with `BackendChoice::Auto` (MPI under a launcher of several ranks).
//! - `nccl` (built with the `nccl` feature, on a GPU machine): `Nccl::init`, then all-reduce mean and
//!   broadcast of CUDA tensors checked against their exact values; prints the NCCL version and the device.
//!   `cargo xtask gpu-pack`'s `run.sh dist` runs it at `-np 1`.
//!
//! Every line it prints starts with `[rank R/N]`; it ends with `[rank R/N] ok` when every check passed and
//! exits non-zero otherwise.

use std::process::ExitCode;

use diem_dist::mpi::LayoutCheck;
use diem_dist::{agree, check_same, error_chain, Communicator, Disagreement, DistError, Mpi};
use tch::{Device, Kind, Tensor};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("collectives", String::as_str);
    if mode == "auto" {
        return auto();
    }
    if mode == "nccl" {
        return nccl_check();
    }
    let mut comm = match Mpi::init() {
        Ok(c) => c,
        Err(e) => {
            say_err(format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let tag = format!("[rank {}/{}]", comm.rank(), comm.size());
    let result = match mode {
        "collectives" => {
            if let Some(max) = args.get(1).and_then(|a| a.parse().ok()) {
                comm.set_max_count(max);
            }
            collectives(&mut comm, &tag)
        }
        "agree-fail" => agree_fail(&comm),
        "abort" => {
            if comm.rank() + 1 == comm.size() {
                say_err(format!("{tag} aborting"));
                comm.abort(3);
            }
            comm.barrier().map_err(|e| e.to_string())
        }
        other => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Ok(()) => {
            println!("{tag} ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Leave like a real binary: print, finalize MPI (dropping the communicator), exit non-zero.
            say_err(format!("{tag} error: {e}"));
            drop(comm);
            ExitCode::FAILURE
        }
    }
}

/// The `nccl` mode: NCCL's collectives on CUDA tensors of two dtypes, against their exact results.
#[cfg(feature = "nccl")]
fn nccl_check() -> ExitCode {
    let comm = match diem_dist::nccl::Nccl::init() {
        Ok(c) => c,
        Err(e) => {
            say_err(format!("nccl error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let (rank, size, device) = (comm.rank(), comm.size(), comm.device());
    let tag = format!("[rank {rank}/{size}]");
    let run = || -> Result<(), String> {
        // Rank r holds (r + 1) everywhere: the mean is (K + 1) / 2, exact in both dtypes.
        let r = (rank + 1) as f64;
        let mut t = vec![
            Tensor::full([1 << 20], r, (Kind::Float, device)),
            Tensor::full([3, 5], r, (Kind::Double, device)),
        ];
        comm.all_reduce_mean(&mut t).map_err(|e| e.to_string())?;
        let want = (size as f64 + 1.0) / 2.0;
        for x in &t {
            let err = (x.to_kind(Kind::Double) - want).abs().max().double_value(&[]);
            if err != 0.0 || x.device() != device {
                return Err(format!("all_reduce_mean: error {err} on {:?}", x.device()));
            }
        }
        let mut b = vec![Tensor::full([257], r, (Kind::Float, device))];
        comm.broadcast(&mut b, 0).map_err(|e| e.to_string())?;
        if b[0].ne(1.0).any().int64_value(&[]) != 0 {
            return Err("broadcast: not rank 0's values".into());
        }
        println!("{tag} nccl version {} on {device:?}: all_reduce_mean and broadcast exact", comm.version());
        Ok(())
    };
    match run() {
        Ok(()) => {
            println!("{tag} ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_err(format!("{tag} error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The `nccl` mode in a build without NCCL.
#[cfg(not(feature = "nccl"))]
fn nccl_check() -> ExitCode {
    say_err("nccl error: this build has no NCCL (build with --features nccl)".into());
    ExitCode::FAILURE
}

/// Prints a line to stderr in one write, so that mpirun does not interleave it with another rank's.
fn say_err(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

fn auto() -> ExitCode {
    match diem_dist::init(diem_dist::BackendChoice::Auto, false) {
        Ok(c) => {
            println!("[rank {}/{}] backend={}", c.rank(), c.size(), c.backend());
            println!("[rank {}/{}] local_rank={}", c.rank(), c.size(), c.local_rank());
            println!("[rank {}/{}] ok", c.rank(), c.size());
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_err(format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Fails with a message when `cond` is false.
fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).unwrap_or_default()
}

/// A rank's values for the all-reduce test: smooth, rank-dependent, not exactly representable sums.
fn values(rank: usize, n: usize, salt: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 + 1.0) * (rank as f64 + 1.3) * salt).sin() * 10f64.powi((i % 7) as i32 - 3))
        .collect()
}

/// FNV-1a of bytes: a hash of a result that ranks print and the test compares.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn collectives(comm: &mut Mpi, tag: &str) -> Result<(), String> {
    let (rank, size) = (comm.rank(), comm.size());
    let e = |e: DistError| e.to_string();
    println!("{tag} local_rank={} threading={:?}", comm.local_rank(), comm.threading());

    // MPI cannot be initialized twice: a clear error, no panic.
    match Mpi::init() {
        Err(DistError::Mpi(m)) if m.contains("already initialized") => println!("{tag} second_init=refused"),
        Err(other) => return Err(format!("second init: unexpected error {other}")),
        Ok(_) => return Err("second init succeeded".into()),
    }

    // Broadcast from the last rank: mixed dtypes, a transposed (non-contiguous) tensor, a scalar, a
    // parameter that requires gradients, an integer and a bf16 tensor (any dtype travels as bytes).
    let root = size - 1;
    let fill = |r: usize| -> Vec<Tensor> {
        let v = values(r, 12, 0.7);
        let r = r as f64;
        vec![
            Tensor::from_slice(&v).reshape([3, 4]).to_kind(Kind::Float) + r,
            Tensor::from_slice(&[r, r * 2.0, -r]).to_kind(Kind::Double),
            Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]).tr() * (r + 1.0),
            Tensor::from(r as f32 + 0.5),
            (Tensor::ones([4], (Kind::Float, Device::Cpu)) * r).set_requires_grad(true),
            Tensor::from_slice(&[r as i64, 7, -1]),
            Tensor::from_slice(&[r as f32, 1.5]).to_kind(Kind::BFloat16),
        ]
    };
    let mut mine = fill(rank);
    comm.broadcast(&mut mine, root).map_err(e)?;
    let want = fill(root);
    for (i, (got, want)) in mine.iter().zip(&want).enumerate() {
        let (g, w) = (to_f64(got), to_f64(want));
        ensure(g == w && got.size() == want.size(), || {
            format!("broadcast tensor {i}: got {g:?}, want {w:?}")
        })?;
    }
    ensure(mine[4].requires_grad(), || "broadcast dropped requires_grad".into())?;
    println!("{tag} broadcast=ok");

    // All-reduce mean: f32 and f64 groups, a non-contiguous view, a parameter-like tensor.
    let n = 1000;
    let mut grads = vec![
        Tensor::from_slice(&values(rank, n, 0.37)).to_kind(Kind::Float),
        Tensor::from_slice(&values(rank, 17, 1.9)),
        Tensor::from_slice(&values(rank, 12, 2.3)).to_kind(Kind::Float).reshape([4, 3]).tr(),
        Tensor::from_slice(&values(rank, 5, 0.11)).to_kind(Kind::Float).set_requires_grad(true),
    ];
    comm.all_reduce_mean(&mut grads).map_err(e)?;
    // (length, salt, f32?) of each tensor; the expected mean is computed in f64 from the inputs as the
    // tensors held them, and compared relative to the largest input at that position.
    let specs = [(n, 0.37, true), (17, 1.9, false), (12, 2.3, true), (5, 0.11, true)];
    for (i, (len, salt, single)) in specs.iter().enumerate() {
        let round = |v: f64| if *single { f64::from(v as f32) } else { v };
        let inputs: Vec<Vec<f64>> =
            (0..size).map(|r| values(r, *len, *salt).into_iter().map(round).collect()).collect();
        let mut got = to_f64(&grads[i]);
        if i == 2 {
            // Compare in the tensor's logical (transposed) order.
            got = to_f64(&grads[i].tr().contiguous());
        }
        let tol = if *single { 4.0 * f64::from(f32::EPSILON) } else { 4.0 * f64::EPSILON };
        for j in 0..*len {
            let mean = inputs.iter().map(|v| v[j]).sum::<f64>() / size as f64;
            let scale = inputs.iter().map(|v| v[j].abs()).fold(f64::MIN_POSITIVE, f64::max);
            let err = (got[j] - mean).abs() / scale;
            ensure(err <= tol, || {
                format!("all_reduce_mean tensor {i}[{j}]: {} vs {mean}: error {err:e}", got[j])
            })?;
        }
    }
    let bytes: Vec<u8> = grads
        .iter()
        .flat_map(|t| to_f64(&t.contiguous()).into_iter().flat_map(f64::to_le_bytes).collect::<Vec<_>>())
        .collect();
    println!("{tag} allreduce_hash={:016x}", fnv(bytes));
    match comm.all_reduce_mean(&mut [Tensor::from_slice(&[1i64, 2])]) {
        Err(DistError::Tensor { .. }) => {}
        other => return Err(format!("all_reduce_mean of i64: expected a tensor error, got {other:?}")),
    }
    println!("{tag} allreduce=ok");

    // All-gather of bytes of different lengths (rank 0 sends nothing).
    let mine: Vec<u8> = (0..rank * 3).map(|i| (rank * 10 + i) as u8).collect();
    let all = comm.all_gather_bytes(&mine).map_err(e)?;
    for (r, got) in all.iter().enumerate() {
        let want: Vec<u8> = (0..r * 3).map(|i| (r * 10 + i) as u8).collect();
        ensure(*got == want, || format!("all_gather_bytes from rank {r}: got {got:?}, want {want:?}"))?;
    }
    let f = comm.all_gather_f64(&[rank as f64, -0.5]).map_err(e)?;
    ensure(f.len() == size && f.iter().enumerate().all(|(r, v)| *v == [r as f64, -0.5]), || {
        format!("all_gather_f64: {f:?}")
    })?;
    println!("{tag} allgather=ok");

    // Gather of unequal row counts (rank r holds 2r + 1 rows, then 2r: rank 0 none), to rank 0 and the last.
    for (extra, groot) in [(1usize, 0usize), (0, root)] {
        let rows_of = |r: usize| 2 * r + extra;
        let make = |r: usize| {
            Tensor::arange((rows_of(r) * 6) as i64, (Kind::Float, Device::Cpu)).reshape([
                rows_of(r) as i64,
                2,
                3,
            ]) + (r * 1000) as f64
        };
        let got = comm.gather_rows(&make(rank), groot).map_err(e)?;
        if rank == groot {
            let got = got.ok_or("gather_rows returned nothing on its root")?;
            let parts: Vec<Tensor> = (0..size).map(make).collect();
            let want = Tensor::cat(&parts, 0);
            ensure(got.size() == want.size() && to_f64(&got) == to_f64(&want), || {
                format!("gather_rows: got shape {:?}, want {:?}", got.size(), want.size())
            })?;
        } else {
            ensure(got.is_none(), || "gather_rows returned rows off its root".into())?;
        }
    }
    println!("{tag} gather_rows=ok");

    if size > 1 {
        // Different trailing shapes: a mismatch on every rank, no hang.
        let rows = Tensor::zeros([2, 3 + rank as i64], (Kind::Float, Device::Cpu));
        match comm.gather_rows(&rows, 0) {
            Err(DistError::Mismatch { detail, .. }) => println!("{tag} gather_mismatch=detected ({detail})"),
            other => {
                return Err(format!("gather_rows with different shapes: expected Mismatch, got {other:?}"))
            }
        }
        check_same(comm, "config", "same").map_err(e)?;
        match check_same(comm, "config", &format!("v{rank}")) {
            Err(DistError::Mismatch { detail, .. }) if detail.contains("rank 1: v1") => {
                println!("{tag} check_same_mismatch=detected")
            }
            other => {
                return Err(format!("check_same with different values: expected Mismatch, got {other:?}"))
            }
        }
        // Different shapes in a broadcast: detected when layouts are checked on every call.
        comm.set_layout_check(LayoutCheck::Always);
        let mut t = vec![Tensor::zeros([1 + rank as i64], (Kind::Float, Device::Cpu))];
        match comm.broadcast(&mut t, 0) {
            Err(DistError::Mismatch { .. }) => println!("{tag} layout_mismatch=detected"),
            other => {
                return Err(format!("broadcast with different shapes: expected Mismatch, got {other:?}"))
            }
        }
        comm.set_layout_check(LayoutCheck::First);
    }
    comm.barrier().map_err(e)?;
    Ok(())
}

/// The last rank fails a phase; [`agree`] must stop every rank with that rank's error.
fn agree_fail(comm: &Mpi) -> Result<(), String> {
    let failing = comm.size() - 1;
    let local: Result<u32, std::io::Error> = if comm.rank() == failing {
        Err(std::io::Error::other("cannot read data/shard-1.npz: no such file"))
    } else {
        Ok(7)
    };
    match agree(comm, local) {
        Ok(v) => Err(format!("agree returned Ok({v}) although rank {failing} failed")),
        Err(Disagreement::Local(err)) => Err(format!("rank {} failed: {}", comm.rank(), error_chain(&err))),
        Err(Disagreement::Remote(err)) => Err(error_chain(&err)),
    }
}
