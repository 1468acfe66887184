//! Files of a run directory: atomic writes, `.npy` sample arrays, the Gaussian prior's safetensors file,
//! `metrics.jsonl` and `state.bin` (DESIGN.md "Files").

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{EmError, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory, `fsync` and a rename, so a kill
/// leaves either the old file or the new one.
///
/// # Errors
/// [`EmError::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `write` into the temporary file.
fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| EmError::io(path, e))
}

/// `dir/.name.tmp-PID` for `dir/name`.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Creates `dir` and its parents.
///
/// # Errors
/// [`EmError::Io`] naming `dir`.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EmError::io(dir, e))
}

/// Writes a float tensor (f32 or f64, any device) as a `.npy` array, atomically. Other kinds are written as f32.
///
/// # Errors
/// [`EmError::Io`] naming the file.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
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
///
/// # Errors
/// [`EmError::Io`] or [`EmError::File`] naming the file (missing, not float32/float64, corrupt).
pub fn read_npy(path: &Path, device: Device) -> Result<Tensor> {
    let open = || File::open(path).map(BufReader::new).map_err(|e| EmError::io(path, e));
    if let Ok(a) = ArrayD::<f32>::read_npy(open()?) {
        return Ok(array_to_tensor(a, device));
    }
    match ArrayD::<f64>::read_npy(open()?) {
        Ok(a) => Ok(array_to_tensor(a, device)),
        Err(e) => Err(EmError::file(path, format!("not a float32/float64 .npy array: {e}"))),
    }
}

fn array_to_tensor<T: tch::kind::Element + Copy>(a: ArrayD<T>, device: Device) -> Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<T> = a.iter().copied().collect();
    Tensor::from_slice(&v).reshape(shape).to_device(device)
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
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
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

/// The version of `state.bin`.
pub const STATE_VERSION: u32 = 1;

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
    /// A fingerprint of the observations the run was created with (count, shapes, sum of y).
    pub observations: ObservationFingerprint,
}

/// What identifies an observation set well enough to refuse resuming on different data.
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
    /// `Σ y` in f64, as bits.
    pub y_sum_bits: u64,
}

impl ObservationFingerprint {
    /// The fingerprint of `obs`.
    pub fn of(obs: &diem_operators::Observation) -> Self {
        let sum = obs.y.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        Self {
            count: obs.len(),
            x_shape: obs.operator.x_shape(),
            y_shape: obs.operator.y_shape(),
            operator: obs.operator.kind(),
            y_sum_bits: sum.to_bits(),
        }
    }
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

    /// Reads `state.bin`.
    ///
    /// # Errors
    /// [`EmError::Io`] or [`EmError::File`] (corrupt file, unsupported version) naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EmError::io(path, e))?;
        let state: Self =
            bincode::deserialize(&bytes).map_err(|e| EmError::file(path, format!("corrupt state: {e}")))?;
        if state.version != STATE_VERSION {
            return Err(EmError::file(
                path,
                format!("state version {} is not supported (expected {STATE_VERSION})", state.version),
            ));
        }
        Ok(state)
    }
}
