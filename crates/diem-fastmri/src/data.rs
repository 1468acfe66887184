//! The fastMRI slices (docs/method.md §9c "Data"): extraction from the HDF5 files, the per-volume normalization to
//! `[−2, 2]` and the synthetic knee-like fixture.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{FastMriError, Result};
use crate::python::{run_script, EXTRACT_SCRIPT, FIXTURE_SCRIPT};

/// The first kept slice index (docs/method.md §9c).
pub const FIRST_SLICE: usize = 10;
/// The last kept slice index, inclusive (31 slices per volume).
pub const LAST_SLICE: usize = 40;
/// The extraction index file in the cache folder.
pub const INDEX_FILE: &str = "index.json";

/// One volume of the extraction index (written by the embedded Python script).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeEntry {
    /// The HDF5 file, relative to the data root.
    pub file: String,
    /// Slices in the file.
    pub total_slices: usize,
    /// The kept slice indices (a subset of `first..=last`; fewer when the volume is short).
    pub slices: Vec<usize>,
    /// The `.npy` file of the kept slices in the cache folder (`None` when no slice was kept).
    pub npy: Option<String>,
    /// `[kept, H, W]`.
    pub shape: Vec<usize>,
}

impl VolumeEntry {
    /// The split the volume belongs to: `val` when a folder of its path contains `val` (fastMRI's
    /// `singlecoil_val`), else `train`.
    pub fn split(&self) -> Split {
        let path = Path::new(&self.file);
        let in_val = path
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .any(|c| c.as_os_str().to_string_lossy().to_ascii_lowercase().contains("val"));
        if in_val {
            Split::Val
        } else {
            Split::Train
        }
    }
}

/// The training (E-step data) or validation (held-out) split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training volumes.
    Train,
    /// Validation volumes.
    Val,
}

/// The extraction index (`index.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractIndex {
    /// Format version (1).
    pub version: u32,
    /// The data root that was scanned.
    pub root: String,
    /// First kept slice.
    pub first: usize,
    /// Last kept slice (inclusive).
    pub last: usize,
    /// Every `.h5` file found, sorted by relative path.
    pub volumes: Vec<VolumeEntry>,
}

impl ExtractIndex {
    /// Reads `cache/index.json`.
    ///
    /// # Errors
    /// IO or JSON errors naming the file.
    pub fn load(cache: &Path) -> Result<Self> {
        let path = cache.join(INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| FastMriError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| FastMriError::Json { path, source })
    }
}

/// How each volume is mapped to `[−2, 2]` (docs/method.md §9c, §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// The authors' code: divide by the maximum over the volume's kept slices, then `x ← 4x − 2` (the default).
    #[default]
    Max,
    /// True min-max over the volume's kept slices: `x ← 4 (x − min)/(max − min) − 2`.
    Minmax,
}

/// Extracts slices `first..=last` of every `*.h5` under `root` into `cache` (one `.npy` per volume and
/// [`INDEX_FILE`]) by running the embedded h5py script with `python`; `max_volumes` (> 0) keeps only the
/// first that many files.
///
/// # Errors
/// [`FastMriError::Python`] when python or h5py is missing; [`FastMriError::Hdf5`] naming a corrupt file or
/// one without `reconstruction_rss`; IO/JSON errors reading the index.
pub fn extract(
    python: &Path,
    root: &Path,
    cache: &Path,
    (first, last): (usize, usize),
    max_volumes: Option<usize>,
    progress: bool,
) -> Result<ExtractIndex> {
    if !root.is_dir() {
        return Err(FastMriError::data(
            root,
            "is not a folder (expected the fastMRI data root with *.h5 files)",
        ));
    }
    if first > last {
        return Err(FastMriError::config("slices", format!("first {first} > last {last}")));
    }
    std::fs::create_dir_all(cache).map_err(|e| FastMriError::io(cache, e))?;
    let args = [
        "extract".to_string(),
        root.display().to_string(),
        cache.display().to_string(),
        first.to_string(),
        last.to_string(),
        max_volumes.unwrap_or(0).to_string(),
    ];
    run_script(python, EXTRACT_SCRIPT, &args, "volumes extracted", None, progress)?;
    ExtractIndex::load(cache)
}

/// Reads one extracted volume `[kept, H, W]` (f32) from the cache.
///
/// # Errors
/// IO/format errors naming the `.npy` file; [`FastMriError::Data`] when its shape differs from the index.
pub fn load_volume(cache: &Path, entry: &VolumeEntry) -> Result<Option<Tensor>> {
    let Some(npy) = &entry.npy else { return Ok(None) };
    let path = cache.join(npy);
    let t = diem_em::read_npy(&path, Device::Cpu)?.to_kind(Kind::Float);
    let want: Vec<i64> = entry.shape.iter().map(|&d| d as i64).collect();
    if t.size() != want {
        return Err(FastMriError::data(
            &path,
            format!("shape {:?} differs from the index's {want:?}", t.size()),
        ));
    }
    Ok(Some(t))
}

/// Normalizes one volume's kept slices `[S, H, W]` to `[−2, 2]` (docs/method.md §9c): [`Normalization::Max`]
/// `x ← 4 x / max − 2`, [`Normalization::Minmax`] `x ← 4 (x − min)/(max − min) − 2`, with max and min over
/// all of the volume's kept slices.
///
/// # Errors
/// [`FastMriError::Data`] naming `file` when the volume is not finite, or is constant (min-max) or has a
/// non-positive maximum (max).
pub fn normalize_volume(volume: &Tensor, normalization: Normalization, file: &Path) -> Result<Tensor> {
    let v = volume.to_kind(Kind::Double);
    if v.isfinite().all().int64_value(&[]) == 0 {
        return Err(FastMriError::data(file, "the volume holds non-finite values"));
    }
    let max = v.max().double_value(&[]);
    let min = v.min().double_value(&[]);
    let x = match normalization {
        Normalization::Max => {
            if max <= 0.0 {
                return Err(FastMriError::data(
                    file,
                    format!("the volume's maximum is {max}; cannot max-normalize"),
                ));
            }
            v / max
        }
        Normalization::Minmax => {
            if max <= min {
                return Err(FastMriError::data(file, "the volume is constant; cannot min-max normalize"));
            }
            (v - min) / (max - min)
        }
    };
    Ok((x * 4.0 - 2.0).to_kind(Kind::Float))
}

/// Writes the synthetic fixture: `volumes` knee-like volumes of `slices` slices of `size × size`, as fastMRI
/// single-coil files with a `reconstruction_rss` dataset, under `out/singlecoil_train` (and the last volume
/// under `out/singlecoil_val` when `volumes ≥ 2`). Deterministic in `seed`.
///
/// # Errors
/// [`FastMriError::Python`] when python or h5py is missing; [`FastMriError::Config`] for zero sizes.
pub fn make_fixture(
    python: &Path,
    out: &Path,
    volumes: usize,
    slices: usize,
    size: usize,
    seed: u64,
) -> Result<Vec<PathBuf>> {
    if volumes == 0 || slices == 0 || size < 4 {
        return Err(FastMriError::config(
            "fixture",
            format!("needs volumes ≥ 1, slices ≥ 1 and size ≥ 4; got {volumes}, {slices}, {size}"),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| FastMriError::io(out, e))?;
    let args = [
        "fixture".to_string(),
        out.display().to_string(),
        volumes.to_string(),
        slices.to_string(),
        size.to_string(),
        seed.to_string(),
    ];
    run_script(python, FIXTURE_SCRIPT, &args, "fixture volumes", Some(volumes as u64), false)?;
    Ok((0..volumes)
        .map(|v| {
            let split = if volumes >= 2 && v == volumes - 1 { "singlecoil_val" } else { "singlecoil_train" };
            out.join(split).join(format!("file_{v:03}.h5"))
        })
        .collect())
}
