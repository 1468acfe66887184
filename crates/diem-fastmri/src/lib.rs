//! The accelerated-MRI experiment of the DiEM paper (docs/method.md §9c, paper §5.3) as a reproducible pipeline:
//! learn a diffusion prior over knee MR slices from undersampled, noisy k-space alone.
//!
//! - [`prepare()`]: fastMRI single-coil HDF5 files → slices 10..=40 of every volume ([`extract`] runs an
//!   embedded h5py script with the project's venv python: there is no usable pure-Rust HDF5 reader), per-volume
//!   max normalization to `[−2, 2]` ([`Normalization`]), and observations `y = A x + 1e-2 ε` with a random
//!   column mask per slice at acceleration R = 6 ([`diem_operators::KSpace::random_lines`]), saved with
//!   [`diem_operators::Observation::save`] next to the images and `prepare.json`.
//! - [`reproduce`]: the EM run of [`FastMriConfig::paper`] (U-Net with space-to-depth 4, 16 laps of 64 epochs,
//!   DDPM 64 E-steps with MMPS/Tweedie/CG 3, 2 samples per pair, PPCA refit of μ_x, Gaussian init of rank 64),
//!   with an [`MriObserver`] that draws prior samples and posteriors of held-out slices at R = 4, 6, 8, 10
//!   every lap (`lap-NNN/prior.png`, `lap-NNN/posterior.png`), records PSNR/SSIM of the posterior mean as a
//!   diagnostic (the paper reports none), and writes `report.md`. Checkpoints, samples and `metrics.jsonl`
//!   come from [`diem_em::EmRun`]; runs resume after a kill.
//! - [`make_fixture`]: synthetic knee-like volumes in the fastMRI file layout, so the CPU presets
//!   ([`FastMriConfig::tiny`], [`FastMriConfig::micro`]) and the tests run on the real file format.
//!
//! The binary `diem-fastmri` wraps these (`cargo xtask prepare-fastmri` / `reproduce-fastmri` forward to it):
//!
//! ```text
//! diem-fastmri prepare --data ~/fastmri/knee [--out data/cache/fastmri] [--acceleration 6] [--seed 0]
//!                      [--normalization max|minmax] [--max-volumes N]
//! diem-fastmri reproduce --paper [--data data/cache/fastmri] [--out runs/fastmri-paper] [--laps N] [--resume|--overwrite]
//! diem-fastmri reproduce --tiny  [--out runs/fastmri-tiny] --overwrite      # synthetic fixture, ~1–3 min on a CPU
//! diem-fastmri make-fixture --out DIR [--volumes 3] [--slices 44] [--size 32] [--seed 0]
//! ```
//!
//! ```no_run
//! use diem_fastmri::{reproduce, FastMriConfig, RunOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The CPU preset on its synthetic fixture (written to runs/fastmri-tiny/fixture and prepared).
//! let options = RunOptions { overwrite: true, ..RunOptions::default() };
//! let summary = reproduce(&FastMriConfig::tiny(), None, "runs/fastmri-tiny".as_ref(), None, &options)?;
//! println!("{}", summary.report.display());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod config;
pub mod data;
pub mod error;
pub mod observer;
pub mod prepare;
pub mod python;
pub mod report;
pub mod run;

pub use config::{size_multiple, FastMriConfig, FigureConfig, FixtureSpec};
pub use data::{
    extract, load_volume, make_fixture, normalize_volume, ExtractIndex, Normalization, Split, VolumeEntry,
    FIRST_SLICE, INDEX_FILE, LAST_SLICE,
};
pub use error::{Error, FastMriError, Result};
pub use observer::{gaussian_samples, r_tag, to_images, MriObserver, POSTERIOR_FIGURE, PRIOR_FIGURE};
pub use prepare::{
    images_file, mix_seed, observations_file, prepare, simulate_kspace, PrepareConfig, PrepareSummary,
    PreparedData, ShortVolume, PREPARE_FILE,
};
pub use python::default_python;
pub use report::{report_markdown, write_report, REPORT_FILE};
pub use run::{reproduce, reproduce_on, stored_run, ReproduceSummary, RunOptions, StoredRun, FASTMRI_FILE};
