//! The corrupted CIFAR-10 experiment of docs/method.md §9b (paper §5.2) as a reproducible pipeline: DiEM learns a
//! diffusion prior over 32×32 RGB images from training images with a fraction ρ of their pixels deleted.
//!
//! - [`format`](mod@format): the official "CIFAR-10 binary version" (`cifar-10-binary.tar.gz` or its extracted
//!   `cifar-10-batches-bin/`): records of 1 label byte + 3072 pixel bytes (R, G, B planes, row-major), read as
//!   NCHW tensors `[N, 3, 32, 32]`; the pixel map `x = u8·4/256 − 2` and its inverse
//!   `u8 = round(clip((x + 2)·64, 0, 255))`.
//! - [`download`]: fetches the archive with the system `curl` and checks its MD5.
//! - [`prepare`](mod@prepare): one observation per training image, `y = m ⊙ x + 1e-3 ε` with a pixel mask kept iff
//!   `U(0,1) > ρ`, shared by the channels (a [`diem_operators::Mask`] `[N, 1, 32, 32]`), saved with
//!   [`diem_operators::Observation::save`]; plus the training images as `uint8` `.npy` (the FID reference
//!   set) and `prepare.json`.
//! - [`CifarConfig`]: presets `paper` (docs/method.md §9b at GPU scale), `reduced` (real data, CPU-sized), `tiny`
//!   (a synthetic CIFAR-format data set, 1–3 minutes on a CPU) and `micro` (tests).
//! - [`run_experiment`]: prepares the data if needed, runs [`diem_em::EmRun`] with a [`CifarObserver`] that
//!   writes per-lap grids of prior samples (DDIM from `μ_x + 100 z`) and of posterior samples next to their
//!   observations, FID and IS with a user-supplied TorchScript Inception network ([`FidEvaluator`]), and
//!   `report.md` with the paper's Table 1 numbers for comparison. Runs resume after a crash.
//! - [`synthetic`]: structured synthetic images written in the exact binary format (and as `.tar.gz`).
//!
//! The binary `diem-cifar` (run through `cargo xtask prepare-cifar` / `cargo xtask reproduce-cifar`):
//!
//! ```text
//! diem-cifar prepare --data data/cache/cifar10 [--out DIR] [--rho 0.25,0.5,0.75] [--seed S] [--download]
//! diem-cifar reproduce --rho 0.75 [--paper | --tiny] [--data DIR] [--out DIR] [--laps N]
//!                      [--inception inception.pt] [--eval-samples N] [--overwrite | --resume]
//! ```
//!
//! In Rust:
//!
//! ```no_run
//! use diem_cifar::{run_experiment, CifarConfig, RunOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = RunOptions { device: tch::Device::cuda_if_available(), ..RunOptions::default() };
//! let summary = run_experiment(&CifarConfig::tiny(0.75), "runs/cifar-tiny".as_ref(), &options)?;
//! println!("{}", summary.report.display());
//! # Ok(()) }
//! ```
//!
//! Reading the data set and observing it by hand:
//!
//! ```no_run
//! use diem_cifar::{observe, CifarSource, NOISE_STD};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = CifarSource::find("data/cache/cifar10".as_ref())?.read()?;
//! let x = data.train.images(); // f32 [50000, 3, 32, 32] in [−2, 2)
//! let obs = observe(&x, 0.75, 0, NOISE_STD, 5000, None)?;
//! obs.save("observations-rho0.75.npz")?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod config;
pub mod download;
pub mod error;
pub mod fid;
pub mod format;
pub mod observer;
pub mod prepare;
pub mod report;
pub mod run;
pub mod synthetic;

pub use config::{CifarConfig, EvalConfig, SyntheticConfig, CIFAR_TRAIN_IMAGES};
pub use download::{download_archive, md5_file, DownloadOptions, CIFAR_MD5, CIFAR_URL};
pub use error::{CifarError, Error, Result};
pub use fid::{FidEvaluator, REFERENCE_STATS_FILE};
pub use format::{
    pack_archive, read_archive, read_batch_file, read_folder, to_uint8, to_unit, u8_to_unit, unit_to_u8,
    write_batch_file, CifarData, CifarSource, CifarSplit,
};
pub use observer::{CifarObserver, GAUSSIAN_GRID_FILE, POSTERIOR_GRID_FILE, PRIOR_GRID_FILE};
pub use prepare::{
    load_prepared, observation_file_name, observe, prepare, read_images_npy, write_images_npy, PrepareConfig,
    PrepareSummary, PreparedData, PreparedSet, IMAGES_FILE, NOISE_STD, SUMMARY_FILE,
};
pub use report::{paper_rows, report_markdown, write_report, PaperRow, PAPER_TABLE, REPORT_FILE};
pub use run::{
    ensure_prepared, run_experiment, run_experiment_on, stored_config, ExperimentSummary, RunOptions,
    CIFAR_CONFIG_FILE,
};
pub use synthetic::{synthetic_data, synthetic_split, write_synthetic, SyntheticFiles, SyntheticSpec};
