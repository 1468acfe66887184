//! Files of a run directory: atomic writes, `.npy` sample arrays, the Gaussian prior's safetensors file,
//! `metrics.jsonl` and `state.bin` (docs/architecture.md "Files"), and the observation fingerprint that a resume checks.
//!
//! Every write goes through [`write_atomic`]: a temporary `.name.tmp-PID` in the same directory, `fsync`,
//! rename. A symbolic link is written through (the link stays); a path that is not a regular file is
//! refused. Arrays are written only when every entry is finite, and read back only when every entry is.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{EmError, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory, `fsync` and a rename, so a kill
/// leaves either the old file or the new one (and at most a stale `.name.tmp-PID`, removed by
/// [`remove_stale_temp_files`]). A symbolic link at `path` is written through; a `path` that exists and is
/// not a regular file (a directory, `/dev/stdout`, a FIFO) is refused.
///
/// # Errors
/// [`EmError::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `write` into the temporary file.
fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    diem_models::checkpoint::write_atomic_with(path, write).map_err(|e| match e {
        diem_models::Error::Io { path, source } => EmError::Io { path, source },
        other => EmError::Models(other),
    })
}

/// Removes the temporary files (`.name.tmp-PID`) that a killed process left in `dir` and its
/// subdirectories one level down (`init/`, `lap-NNN/`), skipping those of processes still alive. Returns
/// what it removed.
///
/// # Errors
/// [`EmError::Io`] naming the directory or file that could not be read or removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    for d in dirs {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EmError::io(&d, e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = diem_models::checkpoint::is_temp_file(&name) else { continue };
            if pid == std::process::id() || process_alive(pid) {
                continue;
            }
            let path = e.path();
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(EmError::io(&path, err)),
            }
        }
    }
    Ok(removed)
}

/// Whether a process with this id exists (Linux: `/proc/PID`; elsewhere assumed dead).
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Creates `dir` and its parents.
///
/// # Errors
/// [`EmError::Io`] naming `dir`.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EmError::io(dir, e))
}

/// Writes a float tensor (f32 or f64, any device) as a `.npy` array, atomically. Other kinds are written as
/// f32.
///
/// # Errors
/// [`EmError::NonFinite`] naming the file and the rows when an entry is NaN or infinite (nothing is
/// written); [`EmError::Io`] naming the file.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    if let Some(e) = EmError::non_finite(path.display().to_string(), &t) {
        return Err(e);
    }
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t.flatten(0, -1);
    let to_io = |e: ndarray_npy::WriteNpyError| std::io::Error::other(e.to_string());
    let shape_err = |e: ndarray::ShapeError| EmError::file(path, e.to_string());
    if t.kind() == Kind::Double {
        let v = Vec::<f64>::try_from(&flat)?;
        let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(shape_err)?;
        write_atomic_with(path, |f| a.write_npy(std::io::BufWriter::new(f)).map_err(to_io))
    } else {
        let v = Vec::<f32>::try_from(&flat.to_kind(Kind::Float))?;
        let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(shape_err)?;
        write_atomic_with(path, |f| a.write_npy(std::io::BufWriter::new(f)).map_err(to_io))
    }
}

/// Reads a `.npy` array of f32 or f64 (as written by [`write_npy`] or numpy) onto `device`, keeping its dtype.
/// The header must describe exactly the bytes the file holds (a truncated or forged file is refused before
/// anything is allocated), and every entry must be finite.
///
/// # Errors
/// [`EmError::Io`] or [`EmError::File`] naming the file (missing, not a regular file, not float32/float64,
/// truncated, corrupt, non-finite entries).
pub fn read_npy(path: &Path, device: Device) -> Result<Tensor> {
    let bytes = diem_models::checkpoint::read_regular(path).map_err(|e| EmError::io(path, e))?;
    read_npy_bytes(path, &bytes, device)
}

/// [`read_npy`] on the bytes of the file `path` (named in errors only).
///
/// # Errors
/// As [`read_npy`].
pub fn read_npy_bytes(path: &Path, bytes: &[u8], device: Device) -> Result<Tensor> {
    let header = diem_operators::io::read_npy_header(&mut &bytes[..])
        .map_err(|e| EmError::file(path, e.to_string()))?;
    let dtype = header.dtype();
    if !matches!(dtype, Some("float32" | "float64")) {
        return Err(EmError::file(
            path,
            format!(
                "not a float32/float64 .npy array (dtype {})",
                dtype.map_or_else(|| format!("{:?}", header.descr), str::to_string)
            ),
        ));
    }
    let declared = header.data_len().map(|d| d + header.header_len as u64);
    if declared != Some(bytes.len() as u64) {
        return Err(EmError::file(
            path,
            format!(
                "the header declares shape {:?} ({} bytes with the header) but the file holds {} bytes \
                 (truncated or corrupt)",
                header.shape,
                declared.map_or("too many".into(), |d| d.to_string()),
                bytes.len()
            ),
        ));
    }
    let corrupt = |e: ndarray_npy::ReadNpyError| EmError::file(path, format!("corrupt .npy array: {e}"));
    let t = if dtype == Some("float32") {
        array_to_tensor(ArrayD::<f32>::read_npy(bytes).map_err(corrupt)?, device)?
    } else {
        array_to_tensor(ArrayD::<f64>::read_npy(bytes).map_err(corrupt)?, device)?
    };
    let bad = crate::error::non_finite_rows(&t);
    if !bad.is_empty() {
        return Err(EmError::file(
            path,
            format!("{} of {} rows hold NaN or infinite values (corrupt file)", bad.len(), t.size()[0]),
        ));
    }
    Ok(t)
}

fn array_to_tensor<T: tch::kind::Element + Copy>(a: ArrayD<T>, device: Device) -> Result<Tensor> {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<T> = a.iter().copied().collect();
    Ok(Tensor::from_slice(&v).f_reshape(shape)?.to_device(device))
}

/// Writes JSON (pretty) atomically.
///
/// # Errors
/// [`EmError::Json`] or [`EmError::Io`] naming the file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| EmError::Json { path: path.into(), source })?;
    write_atomic(path, &bytes)
}

/// Reads the JSON lines of `metrics.jsonl` (an absent file reads as empty).
///
/// # Errors
/// [`EmError::Io`] or [`EmError::Json`] (with the file's path) for an unreadable file or line.
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = match diem_models::checkpoint::read_regular(path) {
        Ok(t) => String::from_utf8(t).map_err(|e| EmError::file(path, format!("not UTF-8 text: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EmError::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|source| EmError::Json { path: path.into(), source }))
        .collect()
}

/// Rewrites a JSON-lines file atomically with `lines`.
///
/// # Errors
/// [`EmError::Json`] or [`EmError::Io`] naming the file.
pub fn write_jsonl(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).map_err(|source| EmError::Json { path: path.into(), source })?;
        buf.push(b'\n');
    }
    write_atomic(path, &buf)
}

/// The version of `state.bin`. Version 1 (no configuration copy, a sum-of-y fingerprint) is still read.
pub const STATE_VERSION: u32 = 2;

/// The resumable state of a run (`state.bin`, bincode). It is the commit point: written last, after every
/// file of a step is in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Must equal [`STATE_VERSION`].
    pub version: u32,
    /// The run seed (copied from the configuration, checked on resume).
    pub seed: u64,
    /// Whether the Gaussian initialization (`gaussian/`) is complete.
    pub gaussian_done: bool,
    /// Whether the initial E-step of [`crate::LapOrder::TrainThenSample`] (`init/samples.npy`) is complete.
    pub initial_samples_done: bool,
    /// Laps completed (`lap-000 .. lap-{completed−1}` are complete).
    pub completed_laps: usize,
    /// A fingerprint of the observations the run was created with: the hash of every array.
    pub observations: ObservationFingerprint,
    /// The configuration (JSON) the committed steps ran with. A resume compares `config.json` with it
    /// (see [`crate::config::RESUMABLE`]); empty for a run of state version 1, whose `config.json` is then
    /// taken as is.
    pub config: String,
}

/// The digest of one array of an observation set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayDigest {
    /// The field name (`y`, `noise_std`, or an operator parameter such as `matrix`, `0.mask`).
    pub name: String,
    /// The numpy dtype name.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<i64>,
    /// [`Xxh64`] of the entries in row-major order, as little-endian bytes.
    pub hash: u64,
}

/// What identifies an observation set well enough to refuse resuming on different data: the counts, the
/// shapes, the operator kind and a hash of every array (`y`, `noise_std`, every operator parameter).
/// A different matrix, another noise level or permuted rows all change it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationFingerprint {
    /// The number of observations.
    pub count: i64,
    /// The operator's latent shape.
    pub x_shape: Vec<i64>,
    /// The observation shape.
    pub y_shape: Vec<i64>,
    /// The operator kind string.
    pub operator: String,
    /// Every array's digest, `y` and `noise_std` first, then the operator's parameters by name.
    pub arrays: Vec<ArrayDigest>,
    /// `Σ y` in f64 as bits, for a fingerprint read from a state of version 1 (which had no array hashes).
    pub legacy_y_sum_bits: Option<u64>,
}

impl ObservationFingerprint {
    /// The fingerprint of `obs`. Every array is hashed in slices of bounded size, copied to the host one
    /// slice at a time, so it costs one pass over the data (a few GB/s) and little memory whether the data
    /// live in host memory or on a GPU.
    ///
    /// # Errors
    /// [`EmError::Torch`] if an array cannot be read.
    pub fn of(obs: &diem_operators::Observation) -> Result<Self> {
        let mut named =
            vec![("y".to_string(), obs.y.shallow_clone()), ("noise_std".to_string(), obs.noise.std_array())];
        let mut params = obs.operator.params();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        named.extend(params);
        let arrays = named
            .into_iter()
            .map(|(name, t)| {
                Ok(ArrayDigest {
                    dtype: diem_operators::io::dtype_name(t.kind()).to_string(),
                    shape: t.size(),
                    hash: hash_tensor(&t)?,
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            count: obs.len(),
            x_shape: obs.operator.x_shape(),
            y_shape: obs.operator.y_shape(),
            operator: obs.operator.kind(),
            arrays,
            legacy_y_sum_bits: None,
        })
    }

    /// Whether `obs` matches this fingerprint (for a version-1 fingerprint: the counts, shapes, kind and sum
    /// of `y` it recorded). Returns the differences, in words; empty when they match.
    ///
    /// # Errors
    /// As [`ObservationFingerprint::of`].
    pub fn differences(&self, obs: &diem_operators::Observation) -> Result<Vec<String>> {
        let now = Self::of(obs)?;
        let mut out = Vec::new();
        if now.count != self.count {
            out.push(format!("{} observations, the run has {}", now.count, self.count));
        }
        if now.operator != self.operator {
            out.push(format!("operator {:?}, the run has {:?}", now.operator, self.operator));
        }
        if now.x_shape != self.x_shape {
            out.push(format!("latent shape {:?}, the run has {:?}", now.x_shape, self.x_shape));
        }
        if now.y_shape != self.y_shape {
            out.push(format!("observation shape {:?}, the run has {:?}", now.y_shape, self.y_shape));
        }
        if let Some(bits) = self.legacy_y_sum_bits {
            let sum = obs.y.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
            if sum.to_bits() != bits {
                out.push(format!("y sums to {sum}, the run's to {}", f64::from_bits(bits)));
            }
            return Ok(out);
        }
        for a in &now.arrays {
            match self.arrays.iter().find(|b| b.name == a.name) {
                None => out.push(format!("array `{}` is not in the run's observations", a.name)),
                Some(b) if (&b.dtype, &b.shape) != (&a.dtype, &a.shape) => out.push(format!(
                    "`{}` is {} {:?}, the run's is {} {:?}",
                    a.name, a.dtype, a.shape, b.dtype, b.shape
                )),
                Some(b) if b.hash != a.hash => out.push(format!(
                    "`{}` holds different values (or the same values in another order)",
                    a.name
                )),
                Some(_) => {}
            }
        }
        for b in &self.arrays {
            if !now.arrays.iter().any(|a| a.name == b.name) {
                out.push(format!("array `{}` of the run's observations is missing", b.name));
            }
        }
        Ok(out)
    }
}

/// Entries hashed per host copy: 8 Mi (32 MiB of f32).
const HASH_SLICE: i64 = 1 << 23;

/// [`Xxh64`] of a tensor's entries in row-major order (native little-endian bytes), streamed in slices of
/// at most 8 Mi entries so a large array on a GPU or in host memory is never copied whole.
///
/// # Errors
/// [`EmError::Torch`] if the tensor cannot be read.
pub fn hash_tensor(t: &Tensor) -> Result<u64> {
    let mut h = Xxh64::new(0);
    let t = if t.dim() == 0 { t.reshape([1]) } else { t.shallow_clone() };
    let rows = t.size()[0];
    let per_row = t.numel() as i64 / rows.max(1);
    let rows_per_slice = (HASH_SLICE / per_row.max(1)).max(1);
    let elt = t.kind().elt_size_in_bytes();
    let mut buf = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = rows_per_slice.min(rows - start);
        let block = t.f_narrow(0, start, len)?.f_contiguous()?.f_reshape([-1])?;
        let n = block.numel() as i64;
        let mut at = 0;
        while at < n {
            let take = HASH_SLICE.min(n - at);
            let part = block.f_narrow(0, at, take)?.f_to_device(Device::Cpu)?.f_contiguous()?;
            buf.resize(take as usize * elt, 0);
            part.f_copy_data_u8(&mut buf, take as usize)?;
            h.update(&buf);
            at += take;
        }
        start += len;
    }
    Ok(h.finish())
}

/// XXH64 (Yann Collet's 64-bit xxHash), streaming: a fast, stable, non-cryptographic hash. It tells data
/// sets apart that differ by accident (another file, permuted rows), not by design.
#[derive(Debug, Clone)]
pub struct Xxh64 {
    acc: [u64; 4],
    buf: [u8; 32],
    buf_len: usize,
    total: u64,
    seed: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xxh_round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

fn xxh_merge(acc: u64, val: u64) -> u64 {
    (acc ^ xxh_round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Xxh64 {
    /// A hasher with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            acc: [seed.wrapping_add(P1).wrapping_add(P2), seed.wrapping_add(P2), seed, seed.wrapping_sub(P1)],
            buf: [0; 32],
            buf_len: 0,
            total: 0,
            seed,
        }
    }

    fn stripe(&mut self, s: &[u8]) {
        for (i, acc) in self.acc.iter_mut().enumerate() {
            *acc = xxh_round(*acc, le64(&s[8 * i..]));
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let b = self.buf;
            self.stripe(&b);
            self.buf_len = 0;
        }
        let mut chunks = data.chunks_exact(32);
        for s in &mut chunks {
            self.stripe(s);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The hash of everything added.
    pub fn finish(&self) -> u64 {
        let mut h = if self.total >= 32 {
            let [a, b, c, d] = self.acc;
            let mut h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            for v in self.acc {
                h = xxh_merge(h, v);
            }
            h
        } else {
            self.seed.wrapping_add(P5)
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.buf_len];
        while rest.len() >= 8 {
            h ^= xxh_round(0, le64(rest));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let w = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
            h ^= w.wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            rest = &rest[4..];
        }
        for &b in rest {
            h ^= (b as u64).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^= h >> 32;
        h
    }
}

/// `state.bin` of version 1, read only to upgrade it.
#[derive(Deserialize)]
struct RunStateV1 {
    /// Positional (bincode): the version field, already read.
    _version: u32,
    seed: u64,
    gaussian_done: bool,
    initial_samples_done: bool,
    completed_laps: usize,
    observations: FingerprintV1,
}

/// The fingerprint of a version-1 state.
#[derive(Deserialize)]
struct FingerprintV1 {
    count: i64,
    x_shape: Vec<i64>,
    y_shape: Vec<i64>,
    operator: String,
    y_sum_bits: u64,
}

impl RunState {
    /// Writes `state.bin` atomically.
    ///
    /// # Errors
    /// [`EmError::File`] or [`EmError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = bincode::serialize(self).map_err(|e| EmError::file(path, e.to_string()))?;
        write_atomic(path, &bytes)
    }

    /// The bytes [`RunState::save`] writes.
    ///
    /// # Errors
    /// [`EmError::File`] (naming `state.bin`) if the state cannot be serialized.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        bincode::serialize(self).map_err(|e| EmError::file(crate::layout::STATE_FILE, e.to_string()))
    }

    /// Reads `state.bin` (version 2, or version 1 upgraded in memory).
    ///
    /// # Errors
    /// [`EmError::Io`] or [`EmError::File`] (corrupt file, unsupported version) naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let mut bytes = Vec::new();
        File::open(path)
            .map(BufReader::new)
            .and_then(|mut f| {
                let meta = std::fs::metadata(path)?;
                if !meta.is_file() {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
                }
                f.read_to_end(&mut bytes)
            })
            .map_err(|e| EmError::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// [`RunState::load`] on the bytes of the file `path` (named in errors only).
    ///
    /// # Errors
    /// As [`RunState::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let corrupt = |e: bincode::Error| EmError::file(path, format!("corrupt state: {e}"));
        let version = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| EmError::file(path, "corrupt state: truncated (fewer than 4 bytes)"))?;
        let state = match version {
            1 => {
                let v1: RunStateV1 = bincode::deserialize(bytes).map_err(corrupt)?;
                RunState {
                    version: STATE_VERSION,
                    seed: v1.seed,
                    gaussian_done: v1.gaussian_done,
                    initial_samples_done: v1.initial_samples_done,
                    completed_laps: v1.completed_laps,
                    observations: ObservationFingerprint {
                        count: v1.observations.count,
                        x_shape: v1.observations.x_shape,
                        y_shape: v1.observations.y_shape,
                        operator: v1.observations.operator,
                        arrays: Vec::new(),
                        legacy_y_sum_bits: Some(v1.observations.y_sum_bits),
                    },
                    config: String::new(),
                }
            }
            STATE_VERSION => {
                let state: Self = bincode::deserialize(bytes).map_err(corrupt)?;
                let again = bincode::serialize(&state).map_err(corrupt)?;
                if again.len() != bytes.len() {
                    return Err(EmError::file(path, "corrupt state: trailing bytes"));
                }
                state
            }
            v => {
                return Err(EmError::file(
                    path,
                    format!("state version {v} is not supported (expected {STATE_VERSION} or 1)"),
                ))
            }
        };
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_matches_the_reference_vectors_and_streams() {
        let h = |b: &[u8]| {
            let mut x = Xxh64::new(0);
            x.update(b);
            x.finish()
        };
        assert_eq!(h(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(h(b"abc"), 0x44BC_2CF5_AD77_0999);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for split in [0, 1, 31, 32, 33, 500, 999] {
            let mut x = Xxh64::new(0);
            x.update(&data[..split]);
            x.update(&data[split..]);
            assert_eq!(x.finish(), h(&data), "split at {split}");
        }
    }

    #[test]
    fn temp_file_names_are_recognized() {
        assert_eq!(diem_models::checkpoint::is_temp_file(".state.bin.tmp-123"), Some(123));
        for other in ["state.bin", ".state.bin.tmp-", ".tmp-12", "state.bin.tmp-12", ".x.tmp-1a"] {
            assert_eq!(diem_models::checkpoint::is_temp_file(other), None, "{other}");
        }
    }
}
