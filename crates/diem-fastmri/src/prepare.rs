//! `diem-fastmri prepare`: fastMRI HDF5 files → normalized slices and k-space observations (docs/method.md §9c).
//!
//! ```text
//! <out>/
//!   slices/index.json, slices/vol-NNNNN.npy   the extracted reconstruction_rss slices (h5py cache)
//!   train-images.npy                          [N, 1, H, W] f32 in [−2, 2] (ground truth, for figures only)
//!   train-observations.npz                    y = A x + 1e-2 ε, A = column-masked k-space at R (diem-operators)
//!   val-images.npy, val-observations.npz      the held-out (validation) slices, the same way
//!   prepare.json                              the summary (PrepareSummary)
//! ```

use std::path::{Path, PathBuf};

use diem_models::ProgressObserver;
use diem_operators::{KSpace, NoiseCov, Observation};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{extract, load_volume, normalize_volume, Normalization, Split, FIRST_SLICE, LAST_SLICE};
use crate::error::{FastMriError, Result};

/// The summary file of a prepared folder.
pub const PREPARE_FILE: &str = "prepare.json";
/// The extraction cache folder inside a prepared folder.
pub const SLICES_DIR: &str = "slices";
/// The version of [`PREPARE_FILE`].
pub const PREPARE_VERSION: u32 = 1;

/// The images file of a split.
pub fn images_file(split: Split) -> &'static str {
    match split {
        Split::Train => "train-images.npy",
        Split::Val => "val-images.npy",
    }
}

/// The observations file of a split.
pub fn observations_file(split: Split) -> &'static str {
    match split {
        Split::Train => "train-observations.npz",
        Split::Val => "val-observations.npz",
    }
}

/// What `prepare` does (docs/method.md §9c).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Acceleration R of the observations' column masks (6 in the paper).
    pub acceleration: f64,
    /// Seed of the masks and the noise.
    pub seed: u64,
    /// Per-volume normalization.
    pub normalization: Normalization,
    /// Observation noise σ_y (1e-2, so Σ_y = 1e-4 I).
    pub noise_std: f64,
    /// Keep only the first this many `.h5` files (sorted); `None` = all.
    pub max_volumes: Option<usize>,
    /// Kept slices `first..=last` (10..=40).
    pub slices: (usize, usize),
    /// The image side must be a multiple of this (the U-Net's size multiple after space-to-depth; 32 for
    /// [`diem_models::UNetConfig::mri`]).
    pub size_multiple: i64,
    /// Observations simulated per chunk (memory bound of the FFTs).
    pub chunk: i64,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self {
            acceleration: 6.0,
            seed: 0,
            normalization: Normalization::Max,
            noise_std: 1e-2,
            max_volumes: None,
            slices: (FIRST_SLICE, LAST_SLICE),
            size_multiple: diem_models::UNetConfig::mri().size_multiple(),
            chunk: 256,
            progress: false,
        }
    }
}

/// A volume kept with fewer slices than asked, or skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShortVolume {
    /// The file (relative to the data root).
    pub file: String,
    /// Slices in the file.
    pub total_slices: usize,
    /// Slices kept.
    pub kept: usize,
}

/// The content of [`PREPARE_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// [`PREPARE_VERSION`].
    pub version: u32,
    /// The data root.
    pub root: String,
    /// The configuration used.
    pub config: PrepareConfig,
    /// Image side H = W.
    pub size: i64,
    /// `.h5` files found (after `max_volumes`).
    pub volumes: usize,
    /// Training volumes with at least one kept slice.
    pub train_volumes: usize,
    /// Validation volumes with at least one kept slice.
    pub val_volumes: usize,
    /// Training slices (observations).
    pub train_slices: i64,
    /// Validation slices.
    pub val_slices: i64,
    /// Volumes with fewer kept slices than `last − first + 1` (0 kept = skipped).
    pub short_volumes: Vec<ShortVolume>,
    /// How the validation split was formed (the `*val*` folders, or the last volume when there are none).
    pub val_source: String,
    /// Seeds: `[train masks, train noise, val masks, val noise]` (noise seeds are per chunk from these).
    pub seeds: [u64; 4],
    /// Mean fraction of kept k-space columns over the training masks (≈ 1/R).
    pub mean_kept_fraction: f64,
    /// `1/R`.
    pub expected_kept_fraction: f64,
    /// Seconds spent.
    pub seconds: f64,
}

impl PrepareSummary {
    /// Reads `dir/prepare.json`.
    ///
    /// # Errors
    /// IO/JSON errors naming the file; [`FastMriError::Data`] for another version.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(PREPARE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| FastMriError::io(&path, e))?;
        let s: Self = serde_json::from_slice(&bytes)
            .map_err(|source| FastMriError::Json { path: path.clone(), source })?;
        if s.version != PREPARE_VERSION {
            return Err(FastMriError::data(
                path,
                format!("version {} (expected {PREPARE_VERSION})", s.version),
            ));
        }
        Ok(s)
    }
}

/// A splitmix64 mix of `seed` and a stream index: independent seeds for masks, noise chunks and figures
/// ([`diem_operators::seed::stream_seed`]).
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    diem_operators::seed::stream_seed(seed, stream)
}

/// Simulates `y = A x + σ_y ε` for images `x : [N, 1, H, W]` with one random column mask per image at
/// acceleration `r` ([`KSpace::random_lines`], docs/method.md §9c: keep probability `p = 200/(320R − 120)`, centre
/// band forced), masks from `mask_seed`, noise from `mix_seed(noise_seed, chunk)` per chunk of `chunk`
/// images (bounds the FFT memory).
///
/// # Errors
/// Operator errors (shapes, `r < 1`).
pub fn simulate_kspace(
    x: &Tensor,
    r: f64,
    noise_std: f64,
    mask_seed: u64,
    noise_seed: u64,
    chunk: i64,
    progress: Option<&dyn ProgressObserver>,
) -> Result<Observation> {
    let size = x.size();
    if size.len() != 4 || size[1] != 1 {
        return Err(FastMriError::config("images", format!("expected [N, 1, H, W], got {size:?}")));
    }
    let (n, shape) = (size[0], [1, size[2], size[3]]);
    let masks = KSpace::random_lines(n, &shape, r, mask_seed)?.mask().to_device(x.device());
    let noise = NoiseCov::isotropic(noise_std)?;
    let chunk = chunk.max(1);
    let mut ys = Vec::new();
    let mut start = 0;
    let mut c = 0;
    while start < n {
        let len = chunk.min(n - start);
        let op = KSpace::new(masks.narrow(0, start, len), &shape)?;
        let obs = Observation::simulate(
            &x.narrow(0, start, len),
            Box::new(op),
            noise.clone(),
            mix_seed(noise_seed, c),
        )?;
        ys.push(obs.y);
        if let Some(b) = progress {
            b.advance(len as u64);
        }
        start += len;
        c += 1;
    }
    let op = KSpace::new(masks, &shape)?;
    Ok(Observation::new(Tensor::cat(&ys, 0), Box::new(op), noise)?)
}

/// The images of one split: `[N, 1, H, W]` f32, normalized per volume.
fn split_images(
    cache: &Path,
    root: &Path,
    entries: &[&crate::data::VolumeEntry],
    normalization: Normalization,
    bar: &dyn ProgressObserver,
) -> Result<Option<Tensor>> {
    let mut parts = Vec::new();
    for e in entries {
        if let Some(v) = load_volume(cache, e)? {
            parts.push(normalize_volume(&v, normalization, &root.join(&e.file))?.unsqueeze(1));
        }
        bar.advance(1);
    }
    Ok((!parts.is_empty()).then(|| Tensor::cat(&parts, 0)))
}

fn bar(progress: bool, len: u64, what: &str) -> diem_models::progress::Progress {
    diem_models::progress::progress_bar(len, what, progress)
}

/// Runs the whole preparation: extraction with h5py (`python`), per-volume normalization, the split, the
/// k-space observations of both splits and [`PREPARE_FILE`] (layout in the module docs). Every file is
/// written atomically. Volumes with fewer slices than `first..=last` keep what exists (listed in the
/// summary and on stderr); volumes with none are skipped.
///
/// # Errors
/// Python/HDF5 errors naming the file; [`FastMriError::Data`] when no slice is kept, sizes differ between
/// volumes, images are not square or not a multiple of `size_multiple`; IO errors naming the file.
pub fn prepare(python: &Path, root: &Path, out: &Path, config: &PrepareConfig) -> Result<PrepareSummary> {
    let start = std::time::Instant::now();
    if !(config.acceleration >= 1.0 && config.acceleration.is_finite()) {
        return Err(FastMriError::config(
            "acceleration",
            format!("must be ≥ 1, got {}", config.acceleration),
        ));
    }
    if !(config.noise_std > 0.0 && config.noise_std.is_finite()) {
        return Err(FastMriError::config("noise_std", format!("must be > 0, got {}", config.noise_std)));
    }
    if config.size_multiple < 1 {
        return Err(FastMriError::config("size_multiple", "must be ≥ 1"));
    }
    let cache = out.join(SLICES_DIR);
    let index = extract(python, root, &cache, config.slices, config.max_volumes, config.progress)?;
    if index.volumes.is_empty() {
        return Err(FastMriError::data(root, "holds no *.h5 file"));
    }
    let want = config.slices.1 - config.slices.0 + 1;
    let mut short = Vec::new();
    let mut hw: Option<(usize, usize, &str)> = None;
    for v in &index.volumes {
        if v.slices.len() < want {
            eprintln!(
                "fastmri: {} has {} slices: keeping {} of slices {}..={}{}",
                v.file,
                v.total_slices,
                v.slices.len(),
                config.slices.0,
                config.slices.1,
                if v.slices.is_empty() { " (volume skipped)" } else { "" }
            );
            short.push(ShortVolume {
                file: v.file.clone(),
                total_slices: v.total_slices,
                kept: v.slices.len(),
            });
        }
        if v.slices.is_empty() {
            continue;
        }
        let (h, w) = (v.shape[1], v.shape[2]);
        match hw {
            None => hw = Some((h, w, &v.file)),
            Some((h0, w0, f0)) if (h0, w0) != (h, w) => {
                return Err(FastMriError::data(
                    root.join(&v.file),
                    format!("slices are {h}×{w} but {f0} has {h0}×{w0}; all volumes must share one size"),
                ));
            }
            _ => {}
        }
    }
    let Some((h, w, first_file)) = hw else {
        return Err(FastMriError::data(root, "no volume has a slice in the kept range"));
    };
    if h != w || (h as i64) % config.size_multiple != 0 {
        return Err(FastMriError::data(
            root.join(first_file),
            format!(
                "slices are {h}×{w}; they must be square with a side that is a multiple of {} (the U-Net's \
                 size multiple after space-to-depth 4)",
                config.size_multiple
            ),
        ));
    }
    let kept: Vec<_> = index.volumes.iter().filter(|v| !v.slices.is_empty()).collect();
    let mut train: Vec<_> = kept.iter().copied().filter(|v| v.split() == Split::Train).collect();
    let mut val: Vec<_> = kept.iter().copied().filter(|v| v.split() == Split::Val).collect();
    let val_source = if !val.is_empty() {
        "the volumes in *val* folders".to_string()
    } else if train.len() >= 2 {
        let last = train.pop().map(|v| v.file.clone()).unwrap_or_default();
        val = kept.iter().copied().filter(|v| v.file == last).collect();
        format!("no *val* folder: the last training volume ({last}) is held out")
    } else {
        "none (a single volume): the figures use training slices".to_string()
    };
    if train.is_empty() {
        return Err(FastMriError::data(root, "no training volume (every kept volume is in a *val* folder)"));
    }
    let b = bar(config.progress, kept.len() as u64, "volumes normalized");
    let train_x = split_images(&cache, root, &train, config.normalization, &b)?
        .ok_or_else(|| FastMriError::data(root, "no training slice"))?;
    let val_x = split_images(&cache, root, &val, config.normalization, &b)?;
    b.finish_and_clear();
    let s = config.seed;
    let seeds = [mix_seed(s, 1), mix_seed(s, 2), mix_seed(s, 3), mix_seed(s, 4)];
    diem_em::io::create_dir(out)?;
    let total = train_x.size()[0] + val_x.as_ref().map_or(0, |v| v.size()[0]);
    let b = bar(config.progress, total as u64, "observations simulated");
    let r = config.acceleration;
    let train_obs =
        simulate_kspace(&train_x, r, config.noise_std, seeds[0], seeds[1], config.chunk, Some(&b))?;
    diem_em::write_npy(&out.join(images_file(Split::Train)), &train_x)?;
    train_obs.save(out.join(observations_file(Split::Train)))?;
    let mean_kept_fraction = train_obs
        .operator
        .params()
        .iter()
        .find(|(name, _)| name == "mask")
        .map_or(f64::NAN, |(_, m)| m.mean(Kind::Double).double_value(&[]));
    if let Some(vx) = &val_x {
        let val_obs = simulate_kspace(vx, r, config.noise_std, seeds[2], seeds[3], config.chunk, Some(&b))?;
        diem_em::write_npy(&out.join(images_file(Split::Val)), vx)?;
        val_obs.save(out.join(observations_file(Split::Val)))?;
    } else {
        for split_file in [images_file(Split::Val), observations_file(Split::Val)] {
            let p = out.join(split_file);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| FastMriError::io(&p, e))?;
            }
        }
    }
    b.finish_and_clear();
    let summary = PrepareSummary {
        version: PREPARE_VERSION,
        root: root.display().to_string(),
        config: config.clone(),
        size: h as i64,
        volumes: index.volumes.len(),
        train_volumes: train.len(),
        val_volumes: val.len(),
        train_slices: train_x.size()[0],
        val_slices: val_x.as_ref().map_or(0, |v| v.size()[0]),
        short_volumes: short,
        val_source,
        seeds,
        mean_kept_fraction,
        expected_kept_fraction: 1.0 / r,
        seconds: start.elapsed().as_secs_f64(),
    };
    diem_em::io::write_json(&out.join(PREPARE_FILE), &summary)?;
    Ok(summary)
}

/// A prepared folder loaded for a run: the training observations, and the validation images (or the
/// training images when there is no validation split) for the figures.
#[derive(Debug)]
pub struct PreparedData {
    /// The folder.
    pub dir: PathBuf,
    /// Its summary.
    pub summary: PrepareSummary,
    /// The training observations (the E-step data).
    pub train: Observation,
    /// Held-out ground-truth images `[M, 1, H, W]` for the figures.
    pub heldout: Tensor,
    /// Whether [`PreparedData::heldout`] comes from the training split (no validation split).
    pub heldout_from_train: bool,
    /// The validation observations (the validation E-step and loss of docs/method.md §8), when there is a split.
    pub validation: Option<Observation>,
}

impl PreparedData {
    /// Loads `dir` (written by [`prepare`]) onto `device`.
    ///
    /// # Errors
    /// File errors naming the file.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let summary = PrepareSummary::load(dir)?;
        let train = Observation::load(dir.join(observations_file(Split::Train)), device)?;
        let val_path = dir.join(images_file(Split::Val));
        let (heldout, from_train) = if val_path.is_file() {
            (diem_em::read_npy(&val_path, device)?, false)
        } else {
            (diem_em::read_npy(&dir.join(images_file(Split::Train)), device)?, true)
        };
        let val_obs = dir.join(observations_file(Split::Val));
        let validation = if val_obs.is_file() { Some(Observation::load(val_obs, device)?) } else { None };
        Ok(Self {
            dir: dir.into(),
            summary,
            train,
            heldout: heldout.to_kind(Kind::Float),
            heldout_from_train: from_train,
            validation,
        })
    }
}
