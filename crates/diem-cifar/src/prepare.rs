//! Observation sets of the corrupted CIFAR-10 experiment (docs/method.md §9b "Corruption"): for each deletion rate
//! ρ, one observation per training image,
//!
//! ```text
//! m_i ∈ {0,1}^{32×32},  m_i[p] = 1  iff  U(0,1) > ρ        (one draw per pixel, shared by the 3 channels)
//! y_i = m_i ⊙ x_i + 1e-3 ε_i,   ε_i ~ N(0, I_3072)          (so Σ_y = 1e-6 I; deleted pixels hold pure noise)
//! ```
//!
//! [`prepare`] writes, into an output folder: `observations-rho0.75.npz` (one per ρ, through
//! [`Observation::save`]: `y`, the `mask` `[N, 1, 32, 32]`, `noise_std`, `operator = "mask"`), the training
//! images as `train-images-uint8.npy` (`uint8 [N, 3, 32, 32]`, the FID reference set), the test split
//! observed the same way with its own seed as `observations-test-rho0.75.npz` (the validation set of docs/method.md
//! §8) and `prepare.json` ([`PrepareSummary`]: counts, seeds, deleted fractions). Every file is written
//! atomically.
//!
//! Images are processed in chunks; chunk `c` of rate ρ draws its mask from seed
//! `mix(seed, 1, round(ρ·10⁶), c)` and its noise from `mix(seed, 2, round(ρ·10⁶), c)` (SplitMix64), so the
//! result depends only on the seed, ρ and the chunk size.

use std::path::{Path, PathBuf};

use diem_models::ProgressObserver;
use diem_operators::{Mask, NoiseCov, Observation};
use ndarray::{Array4, ArrayD};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{CifarError, Result};
use crate::format::{CifarData, CHANNELS, IMAGE_SIDE};

/// The observation noise standard deviation (docs/method.md §9b): `Σ_y = 1e-6 I`.
pub const NOISE_STD: f64 = 1e-3;
/// The training images (`uint8 [N, 3, 32, 32]`) in a prepared folder.
pub const IMAGES_FILE: &str = "train-images-uint8.npy";
/// The summary of a prepared folder.
pub const SUMMARY_FILE: &str = "prepare.json";
/// The version of [`PrepareSummary`].
pub const SUMMARY_VERSION: u32 = 1;

/// The per-sample shape `[3, 32, 32]`.
pub fn x_shape() -> [i64; 3] {
    [CHANNELS, IMAGE_SIDE, IMAGE_SIDE]
}

/// The observation file name for rate `rho`: `observations-rho0.75.npz`.
pub fn observation_file_name(rho: f64) -> String {
    format!("observations-rho{rho:.2}.npz")
}

/// The test split's observation file name for rate `rho`: `observations-test-rho0.75.npz`.
pub fn test_observation_file_name(rho: f64) -> String {
    format!("observations-test-rho{rho:.2}.npz")
}

/// The seed of the test split's masks and noise, distinct from the training split's `seed`.
fn test_seed(seed: u64) -> u64 {
    mix([seed, 0x7e57, 0, 0])
}

/// What [`prepare`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Deletion rates ρ (docs/method.md §9b: 0.25, 0.5, 0.75).
    pub rhos: Vec<f64>,
    /// The seed of masks and noise.
    pub seed: u64,
    /// Observation noise standard deviation ([`NOISE_STD`]).
    pub noise_std: f64,
    /// Use only the first this many training images (`None` = all).
    pub limit: Option<usize>,
    /// Images per chunk.
    pub chunk: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self {
            rhos: vec![0.25, 0.5, 0.75],
            seed: 0,
            noise_std: NOISE_STD,
            limit: None,
            chunk: 5000,
            progress: false,
        }
    }
}

impl PrepareConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`CifarError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.rhos.is_empty() {
            return Err(CifarError::config("rho", "needs at least one deletion rate"));
        }
        if let Some(r) = self.rhos.iter().find(|r| !(0.0..1.0).contains(*r)) {
            return Err(CifarError::config("rho", format!("each rate must lie in [0, 1), got {r}")));
        }
        if !(self.noise_std.is_finite() && self.noise_std > 0.0) {
            return Err(CifarError::config("noise_std", format!("must be > 0, got {}", self.noise_std)));
        }
        if self.chunk == 0 || self.limit == Some(0) {
            return Err(CifarError::config("chunk/limit", "must be ≥ 1"));
        }
        Ok(())
    }
}

/// One observation set of a prepared folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedSet {
    /// The deletion rate ρ.
    pub rho: f64,
    /// The file name (in the prepared folder).
    pub file: String,
    /// Observations (= training images used).
    pub count: usize,
    /// The fraction of deleted pixels actually drawn (≈ ρ).
    pub deleted_fraction: f64,
    /// The test split's observations at the same rate (the validation set of docs/method.md §8), when the source
    /// has a test split: their file name.
    #[serde(default)]
    pub test_file: Option<String>,
    /// The number of test observations.
    #[serde(default)]
    pub test_count: usize,
}

/// `prepare.json`: what a prepared folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// [`SUMMARY_VERSION`].
    pub version: u32,
    /// Where the images came from (archive or folder).
    pub source: String,
    /// Training images in the source.
    pub train_images: usize,
    /// Test images in the source.
    pub test_images: usize,
    /// Training images used (the observations of every set, and [`IMAGES_FILE`]).
    pub used_images: usize,
    /// [`IMAGES_FILE`].
    pub images_file: String,
    /// The seed of masks and noise.
    pub seed: u64,
    /// The observation noise standard deviation.
    pub noise_std: f64,
    /// Images per chunk (seeds are per chunk).
    pub chunk: usize,
    /// The observation sets, by ρ.
    pub sets: Vec<PreparedSet>,
}

impl PrepareSummary {
    /// Reads `dir/prepare.json`.
    ///
    /// # Errors
    /// IO or JSON errors naming the file.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SUMMARY_FILE);
        let bytes = std::fs::read(&path).map_err(|e| CifarError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| CifarError::Json { path, source })
    }

    /// The set of rate `rho`, if prepared.
    pub fn set(&self, rho: f64) -> Option<&PreparedSet> {
        self.sets.iter().find(|s| (s.rho - rho).abs() < 1e-9)
    }
}

/// SplitMix64 folded over the numbers (the seeds of [`observe`]'s chunks): [`diem_operators::seed::fold_seeds`].
fn mix(values: [u64; 4]) -> u64 {
    diem_operators::seed::fold_seeds(&values)
}

/// Observes `images: [N, 3, 32, 32]` (f32 in [−2, 2)) with rate `rho` (module docs), in chunks of `chunk`
/// images; `progress` advances by one per chunk. Returns the observation set (on the images' device).
///
/// # Errors
/// [`CifarError::Config`] for a bad shape or rate; operator errors.
pub fn observe(
    images: &Tensor,
    rho: f64,
    seed: u64,
    noise_std: f64,
    chunk: usize,
    progress: Option<&dyn ProgressObserver>,
) -> Result<Observation> {
    let size = images.size();
    if size.len() != 4 || size[1..] != x_shape() || size[0] == 0 {
        return Err(CifarError::config("images", format!("must be [N ≥ 1, 3, 32, 32], got {size:?}")));
    }
    let n = size[0];
    let rho_key = (rho * 1e6).round() as u64;
    let noise = NoiseCov::isotropic(noise_std)?;
    let (mut ys, mut masks) = (Vec::new(), Vec::new());
    let mut start = 0;
    let mut c = 0u64;
    while start < n {
        let len = (chunk.max(1) as i64).min(n - start);
        let mask = Mask::random_pixels(len, &x_shape(), rho, mix([seed, 1, rho_key, c]))?;
        masks.push(mask.mask().shallow_clone());
        let x = images.narrow(0, start, len).to_kind(Kind::Float);
        let obs = Observation::simulate(&x, Box::new(mask), noise.clone(), mix([seed, 2, rho_key, c]))?;
        ys.push(obs.y);
        if let Some(bar) = progress {
            bar.advance(1);
        }
        start += len;
        c += 1;
    }
    let mask = Mask::new(Tensor::cat(&masks, 0).to_device(images.device()), &x_shape())?;
    Ok(Observation::new(Tensor::cat(&ys, 0), Box::new(mask), noise)?)
}

/// Writes `uint8 [N, 3, 32, 32]` images to a `.npy` file, atomically.
///
/// # Errors
/// [`CifarError::Config`] for a bad shape; IO errors naming the file.
pub fn write_images_npy(path: &Path, images: &Tensor) -> Result<()> {
    let size = images.size();
    if size.len() != 4 {
        return Err(CifarError::config("images", format!("must be [N, C, H, W], got {size:?}")));
    }
    let dims: Vec<usize> = size.iter().map(|&d| d as usize).collect();
    let data =
        Vec::<u8>::try_from(images.to_kind(Kind::Uint8).to_device(Device::Cpu).contiguous().flatten(0, -1))?;
    let npy = |reason: String| CifarError::Npy { path: path.into(), reason };
    let array =
        Array4::from_shape_vec((dims[0], dims[1], dims[2], dims[3]), data).map_err(|e| npy(e.to_string()))?;
    let mut bytes = Vec::new();
    array.write_npy(&mut bytes).map_err(|e| npy(e.to_string()))?;
    Ok(diem_em::io::write_atomic(path, &bytes)?)
}

/// Reads a `uint8` `.npy` array (as written by [`write_images_npy`] or numpy) as a CPU tensor.
///
/// # Errors
/// [`CifarError::Io`] or [`CifarError::Npy`] naming the file (missing, not uint8).
pub fn read_images_npy(path: &Path) -> Result<Tensor> {
    let file = std::fs::File::open(path).map_err(|e| CifarError::io(path, e))?;
    let array = ArrayD::<u8>::read_npy(std::io::BufReader::new(file))
        .map_err(|e| CifarError::Npy { path: path.into(), reason: format!("not a uint8 .npy array: {e}") })?;
    let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<u8> = array.iter().copied().collect();
    Ok(Tensor::from_slice(&data).reshape(shape))
}

fn bar(len: u64, show: bool) -> diem_models::progress::Progress {
    diem_models::progress::progress_bar(len, "chunks", show)
}

/// Writes the prepared folder `out` for `data` (module docs). `source` describes where the images came from
/// (recorded in `prepare.json`). When `out/prepare.json` already exists with the same seed, noise, chunk and
/// image count, its other sets are kept (so rates can be added one at a time).
///
/// # Errors
/// [`CifarError::Config`] for an invalid configuration or an empty training split; IO and operator errors.
pub fn prepare(data: &CifarData, source: &str, out: &Path, config: &PrepareConfig) -> Result<PrepareSummary> {
    config.validate()?;
    let train = match config.limit {
        Some(l) => data.train.head(l),
        None => data.train.clone(),
    };
    if train.is_empty() {
        return Err(CifarError::config("data", "the training split is empty"));
    }
    std::fs::create_dir_all(out).map_err(|e| CifarError::io(out, e))?;
    let images_u8 = train.images_u8();
    write_images_npy(&out.join(IMAGES_FILE), &images_u8)?;
    let images = crate::format::to_unit(&images_u8);
    let used = train.len();
    let mut summary = PrepareSummary {
        version: SUMMARY_VERSION,
        source: source.into(),
        train_images: data.train.len(),
        test_images: data.test.len(),
        used_images: used,
        images_file: IMAGES_FILE.into(),
        seed: config.seed,
        noise_std: config.noise_std,
        chunk: config.chunk,
        sets: Vec::new(),
    };
    if let Ok(old) = PrepareSummary::load(out) {
        let same = old.seed == summary.seed
            && old.noise_std == summary.noise_std
            && old.chunk == summary.chunk
            && old.used_images == used
            && old.train_images == summary.train_images;
        if same {
            summary.sets = old
                .sets
                .into_iter()
                .filter(|s| !config.rhos.iter().any(|r| (r - s.rho).abs() < 1e-9))
                .filter(|s| out.join(&s.file).is_file())
                .collect();
        }
    }
    let chunks = used.div_ceil(config.chunk) as u64;
    let progress = bar(chunks * config.rhos.len() as u64, config.progress);
    for &rho in &config.rhos {
        progress.set_message(format!("ρ = {rho}"));
        let obs = observe(&images, rho, config.seed, config.noise_std, config.chunk, Some(&progress))?;
        let ones = Tensor::ones([1, CHANNELS, IMAGE_SIDE, IMAGE_SIDE], (Kind::Float, Device::Cpu));
        let kept = obs.operator.apply(&ones.expand([obs.len(), -1, -1, -1], false));
        let deleted_fraction = 1.0 - kept.mean(Kind::Double).double_value(&[]);
        let file = observation_file_name(rho);
        obs.save(out.join(&file))?;
        let (test_file, test_count) = if data.test.is_empty() {
            (None, 0)
        } else {
            let test = crate::format::to_unit(&data.test.images_u8());
            let obs = observe(&test, rho, test_seed(config.seed), config.noise_std, config.chunk, None)?;
            let name = test_observation_file_name(rho);
            obs.save(out.join(&name))?;
            (Some(name), data.test.len())
        };
        summary.sets.push(PreparedSet { rho, file, count: used, deleted_fraction, test_file, test_count });
    }
    progress.finish_and_clear();
    summary.sets.sort_by(|a, b| a.rho.total_cmp(&b.rho));
    let text = serde_json::to_vec_pretty(&summary)
        .map_err(|source| CifarError::Json { path: out.join(SUMMARY_FILE), source })?;
    diem_em::io::write_atomic(&out.join(SUMMARY_FILE), &text)?;
    Ok(summary)
}

/// An observation set and its clean images, loaded from a prepared folder.
#[derive(Debug)]
pub struct PreparedData {
    /// The observations (on the requested device).
    pub observations: Observation,
    /// The clean training images, `uint8 [N, 3, 32, 32]` on the CPU (the same N).
    pub images: Tensor,
    /// `prepare.json`.
    pub summary: PrepareSummary,
    /// The loaded set's entry.
    pub set: PreparedSet,
    /// The test split's observations at the same rate (the validation set), when prepared.
    pub validation: Option<Observation>,
}

/// Loads the set of rate `rho` from the prepared folder `dir`, keeping the first `limit` observations (and
/// images) when given.
///
/// # Errors
/// [`CifarError::NotFound`] when `dir` holds no set for `rho`; IO, format and operator errors naming the
/// file; [`CifarError::Format`] when the images and observations disagree in number.
pub fn load_prepared(dir: &Path, rho: f64, device: Device, limit: Option<i64>) -> Result<PreparedData> {
    let summary = PrepareSummary::load(dir)?;
    let set = summary.set(rho).cloned().ok_or_else(|| CifarError::NotFound {
        dir: dir.to_path_buf(),
        hint: format!("no observation set for ρ = {rho}; run `diem-cifar prepare --rho {rho}` first"),
    })?;
    let path: PathBuf = dir.join(&set.file);
    let mut observations = Observation::load(&path, device)?;
    let images_path = dir.join(&summary.images_file);
    let mut images = read_images_npy(&images_path)?;
    if images.size()[0] != observations.len() || images.size()[1..] != x_shape() {
        return Err(CifarError::format(
            &images_path,
            format!(
                "holds {:?} images but {} has {} observations",
                images.size(),
                path.display(),
                observations.len()
            ),
        ));
    }
    if let Some(l) = limit {
        let l = l.clamp(1, observations.len());
        observations = observations.narrow(0, l);
        images = images.narrow(0, 0, l);
    }
    let validation = match &set.test_file {
        Some(f) if dir.join(f).is_file() => Some(Observation::load(dir.join(f), device)?),
        _ => None,
    };
    Ok(PreparedData { observations, images, summary, set, validation })
}
