//! Data-parallel DiEM on a [`Communicator`] (crate `diem-dist`): how the E-step's chunks are shared between
//! ranks, how gradients are averaged, and the small collectives the run uses at its phase boundaries.
//!
//! - **E-step.** Chunk `c` of an E-step always covers samples `c·chunk .. (c+1)·chunk` and draws its noise
//!   from `(seed, lap, c)` ([`crate::derive_seed`]), whoever computes it. Rank `r` of `K` computes the
//!   contiguous block of chunks [`shard_chunks`]`(C, r, K)`; concatenated in rank order, the blocks are the
//!   samples a single process draws, bit for bit.
//! - **M-step.** Every rank starts from the same parameters (broadcast once), draws a local batch of
//!   [`local_batch`]`(B, r, K)` samples from its own shard with its own seed, and [`DistReducer`] averages
//!   the gradients after backward, weighted by the ranks' batch shares: the mean over the global batch of
//!   `B` samples. Clipping, Adam and the EMA then see identical gradients everywhere, so the parameters stay
//!   identical, which [`parameter_hash`] checks after every lap.
//! - **Errors.** Every phase ends with [`sync`] ([`diem_dist::agree`]): a failure on one rank stops all.

use std::ops::Range;
use std::rc::Rc;

use diem_dist::{Communicator, Disagreement};
use diem_models::GradientReducer;
use tch::{nn, Device, Kind, Tensor};

use crate::error::{EmError, Result};

/// The chunks `[c0, c1)` that rank `rank` of `size` computes, out of `chunks`: contiguous, balanced blocks
/// (the first `chunks mod size` ranks take one more).
pub fn shard_chunks(chunks: u64, rank: usize, size: usize) -> Range<u64> {
    let (k, r) = (size.max(1) as u64, rank as u64);
    let base = chunks / k;
    let extra = chunks % k;
    let start = r * base + r.min(extra);
    start..start + base + u64::from(r < extra)
}

/// The rows `[start, end)` of a sample set of `total` rows, in chunks of `chunk`, that the chunks `chunks`
/// cover.
pub fn chunk_rows(chunks: &Range<u64>, chunk: i64, total: i64) -> Range<i64> {
    let chunk = chunk.max(1);
    let start = (chunks.start as i64).saturating_mul(chunk).min(total);
    let end = (chunks.end as i64).saturating_mul(chunk).min(total);
    start..end
}

/// Rank `rank`'s share of a global batch of `batch` samples over `size` ranks: `batch / size`, plus one for
/// the first `batch mod size` ranks. The shares sum to `batch`.
pub fn local_batch(batch: i64, rank: usize, size: usize) -> i64 {
    let k = size.max(1) as i64;
    batch / k + i64::from((rank as i64) < batch % k)
}

/// The phase-boundary check ([`diem_dist::agree`]): `Ok` on every rank only when every rank succeeded.
/// The failing rank returns its own error; the others an [`EmError::Dist`] naming it.
///
/// # Errors
/// As described.
pub fn sync<T>(comm: &dyn Communicator, local: Result<T>) -> Result<T> {
    agreed(comm, local)
}

/// [`sync`] for any error type that can hold an [`EmError`] (the pipelines' errors): the failing rank
/// returns its own error, the others an [`EmError::Dist`] naming it, converted.
///
/// # Errors
/// As described.
pub fn agreed<T, E>(comm: &dyn Communicator, local: std::result::Result<T, E>) -> std::result::Result<T, E>
where
    E: std::error::Error + From<EmError>,
{
    if comm.size() == 1 {
        return local;
    }
    diem_dist::agree(comm, local).map_err(|d| match d {
        Disagreement::Local(e) => e,
        Disagreement::Remote(e) => E::from(EmError::Dist(e)),
    })
}

/// Runs `f` on rank 0 only (writing shared files, preparing data) and agrees on its outcome: `Some` of its
/// value on rank 0, `None` elsewhere, once every rank knows it succeeded.
///
/// # Errors
/// `f`'s error on rank 0, an [`EmError::Dist`] naming rank 0 on the others.
pub fn on_root<T, E>(
    comm: &dyn Communicator,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<Option<T>, E>
where
    E: std::error::Error + From<EmError>,
{
    let local = if comm.is_root() { f().map(Some) } else { Ok(None) };
    agreed(comm, local)
}

/// The communicator and device of a process that may be one of several ranks started by `mpirun`/`srun`:
/// the back end from `dist` (else `$DIEM_DIST`, else auto: [`diem_dist::init`]) and the device from
/// `device` (else `$DIEM_DEVICE`, else auto). Under a launcher of several ranks, `auto` and a bare `cuda`
/// take GPU `local_rank mod GPUs`, so one rank per GPU needs no flag; `cuda:N` is taken as given.
///
/// # Errors
/// [`EmError::Dist`] for an unknown or missing back end; [`EmError::Config`] for an invalid device.
pub fn launch(device: Option<&str>, dist: Option<&str>) -> Result<(Device, Rc<dyn Communicator>)> {
    let choice = match dist {
        Some(text) => text.parse::<diem_dist::BackendChoice>()?,
        None => diem_dist::BackendChoice::from_env()?,
    };
    let text = device.map(str::to_string).or_else(|| std::env::var(diem_models::DEVICE_VAR).ok());
    let text = text.as_deref().map(str::trim).unwrap_or("auto");
    let parsed =
        text.parse::<diem_models::DeviceChoice>().map_err(|e| EmError::config("device", e.to_string()))?;
    let several =
        diem_dist::Launch::detect().filter(|l| l.size > 1 && choice != diem_dist::BackendChoice::Single);
    let gpus = diem_models::device::cuda_device_count();
    let device = match (&several, parsed) {
        (Some(l), diem_models::DeviceChoice::Auto) if gpus > 0 => Device::Cuda(l.local_rank % gpus),
        (Some(l), diem_models::DeviceChoice::Cuda(_)) if matches!(text, "cuda" | "gpu") && gpus > 0 => {
            Device::Cuda(l.local_rank % gpus)
        }
        (_, choice) => choice.resolve().map_err(|e| EmError::config("device", e.to_string()))?,
    };
    let comm: Rc<dyn Communicator> = Rc::from(diem_dist::init(choice, device.is_cuda())?);
    Ok((device, comm))
}

/// [`GradientReducer`] over a [`Communicator`]: scales this rank's gradients by its batch share
/// `K·b_r/B` and averages them over the `K` ranks, so the result is the gradient of the mean loss over the
/// global batch. A failure flag travels in the same all-reduce, so a rank whose step failed stops every rank
/// at that step.
pub struct DistReducer {
    comm: Rc<dyn Communicator>,
    weight: f64,
}

impl DistReducer {
    /// The reducer of rank `comm.rank()` drawing `local` of the `global` samples of each step.
    pub fn new(comm: Rc<dyn Communicator>, local: i64, global: i64) -> Self {
        let weight = comm.size() as f64 * local as f64 / global.max(1) as f64;
        Self { comm, weight }
    }
}

impl GradientReducer for DistReducer {
    fn reduce(&mut self, grads: &mut [Tensor], failed: bool) -> diem_models::Result<()> {
        let device = grads.first().map_or(Device::Cpu, Tensor::device);
        if self.weight != 1.0 {
            for g in grads.iter_mut() {
                let _ = g.g_mul_scalar_(self.weight);
            }
        }
        let flag = Tensor::from(if failed { 1.0f32 } else { 0.0 }).to_device(device);
        let mut all: Vec<Tensor> = grads.iter().map(Tensor::shallow_clone).collect();
        all.push(flag);
        self.comm
            .all_reduce_mean(&mut all)
            .map_err(|e| diem_models::Error::config("distributed M-step", e.to_string()))?;
        let failures = all.last().map_or(0.0, |f| f.double_value(&[])) * self.comm.size() as f64;
        if failures > 0.5 {
            return Err(diem_models::Error::config(
                "distributed M-step",
                format!("{} rank(s) failed in this training step; every rank stops", failures.round()),
            ));
        }
        Ok(())
    }
}

/// Tensors that only rank 0 knows (shapes included) on every rank: rank 0 passes `Some`, the others `None`;
/// every rank gets rank 0's tensors on `device`. f32 and f64 only.
///
/// # Errors
/// [`EmError::Dist`] when a collective fails; [`EmError::Config`] for another dtype.
pub fn broadcast_from_root(
    comm: &dyn Communicator,
    root: Option<Vec<Tensor>>,
    device: Device,
) -> Result<Vec<Tensor>> {
    if comm.size() == 1 {
        return root.ok_or_else(|| EmError::config("distributed", "rank 0 has nothing to broadcast"));
    }
    // The header: for each tensor, its kind code, its rank and its dimensions (i64, little endian).
    let header: Vec<u8> = match &root {
        Some(ts) => {
            let mut h = Vec::new();
            for t in ts {
                let code = match t.kind() {
                    Kind::Float => 0i64,
                    Kind::Double => 1,
                    k => {
                        return Err(EmError::config("distributed", format!("cannot broadcast {k:?} tensors")))
                    }
                };
                let size = t.size();
                h.extend([code, size.len() as i64]);
                h.extend(size);
            }
            h.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        None => Vec::new(),
    };
    let headers = comm.all_gather_bytes(&header)?;
    let words: Vec<i64> =
        headers[0].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    let mut tensors = match root {
        Some(ts) => ts.into_iter().map(|t| t.to_device(device).contiguous()).collect(),
        None => {
            let mut ts = Vec::new();
            let mut i = 0;
            while i + 1 < words.len() {
                let kind = if words[i] == 0 { Kind::Float } else { Kind::Double };
                let n = words[i + 1] as usize;
                let dims = words.get(i + 2..i + 2 + n).unwrap_or(&[]).to_vec();
                ts.push(Tensor::zeros(dims.as_slice(), (kind, device)));
                i += 2 + n;
            }
            ts
        }
    };
    comm.broadcast(&mut tensors, 0)?;
    Ok(tensors)
}

/// Rows spread over the ranks, gathered on rank 0 in rank order (`Some` there, `None` elsewhere); one
/// process gets its rows back unchanged (no copy).
///
/// # Errors
/// [`EmError::Dist`] when the collective fails or the ranks' rows do not fit together.
pub fn gather_to_root(comm: &dyn Communicator, rows: &Tensor) -> Result<Option<Tensor>> {
    if comm.size() == 1 {
        return Ok(Some(rows.shallow_clone()));
    }
    Ok(comm.gather_rows(rows, 0)?)
}

/// A 64-bit hash of every variable of `vs` (names, shapes and the bits of every value, in name order): equal
/// on two ranks exactly when their parameters are bit-identical (up to hash collisions).
pub fn parameter_hash(vs: &nn::VarStore) -> u64 {
    let mut vars = vs.variables().into_iter().collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |w: u64| {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    };
    for (name, var) in vars {
        name.bytes().for_each(|b| mix(u64::from(b)));
        var.size().iter().for_each(|&d| mix(d as u64));
        let flat = var.detach().to_device(Device::Cpu).contiguous().view(-1);
        match flat.kind() {
            Kind::Double => {
                Vec::<f64>::try_from(&flat).unwrap_or_default().iter().for_each(|v| mix(v.to_bits()))
            }
            _ => Vec::<f32>::try_from(&flat.to_kind(Kind::Float))
                .unwrap_or_default()
                .iter()
                .for_each(|v| mix(u64::from(v.to_bits()))),
        }
    }
    h
}

/// The parameter hashes of every rank (rank order); [`EmError::Dist`] with a mismatch when the ranks'
/// parameters differ, which data-parallel training must never let happen.
///
/// # Errors
/// As described, and when the collective fails.
pub fn check_parameters(comm: &dyn Communicator, vs: &nn::VarStore, lap: usize) -> Result<Vec<u64>> {
    let mine = parameter_hash(vs);
    if comm.size() == 1 {
        return Ok(vec![mine]);
    }
    let all: Vec<u64> = comm
        .all_gather_bytes(&mine.to_le_bytes())?
        .iter()
        .map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap_or([0; 8])))
        .collect();
    if all.iter().any(|&h| h != all[0]) {
        let list: Vec<String> = all.iter().enumerate().map(|(r, h)| format!("rank {r}: {h:016x}")).collect();
        return Err(EmError::Dist(diem_dist::DistError::Mismatch {
            what: format!("the parameters after lap {lap}"),
            detail: list.join(", "),
        }));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_chunk_once_in_order() {
        for chunks in [0u64, 1, 5, 16, 17] {
            for size in 1..=6usize {
                let ranges: Vec<_> = (0..size).map(|r| shard_chunks(chunks, r, size)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, chunks);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(chunk_rows(&(2..4), 10, 35), 20..35);
        assert_eq!(chunk_rows(&(4..4), 10, 35), 35..35);
    }

    #[test]
    fn local_batches_sum_to_the_global_batch() {
        for batch in [1i64, 7, 256, 1024] {
            for size in 1..=5usize {
                let parts: Vec<i64> = (0..size).map(|r| local_batch(batch, r, size)).collect();
                assert_eq!(parts.iter().sum::<i64>(), batch);
                assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn the_parameter_hash_sees_every_bit() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let h0 = parameter_hash(&vs);
        assert_eq!(h0, parameter_hash(&vs));
        tch::no_grad(|| {
            let bumped = f32::from_bits(1.0f32.to_bits() + 1);
            let _ = w.narrow(0, 2, 1).shallow_clone().fill_(f64::from(bumped));
        });
        assert_ne!(h0, parameter_hash(&vs));
    }
}
