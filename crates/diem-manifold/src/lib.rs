//! The low-dimensional manifold experiment (docs/method.md §9a, paper §5.1): DiEM learns a prior over a random
//! smooth 1-D curve in R^5 from noisy 2-D random projections of its points, starting from a Gaussian fit.
//!
//! - [`ManifoldData::generate`]: the ground truth (the `randman` generator of [`diem_models::Randman`]), one
//!   projection `A_i ∈ R^{2×5}` with unit-sphere rows per point and `y_i = A_i x_i + 0.01 ε_i`.
//! - [`ManifoldObserver`]: a [`diem_em::LapObserver`] that, for the initial Gaussian ("lap −1") and after every
//!   lap, draws prior samples, computes the Sinkhorn divergence to held-out ground truth
//!   (`S(v) = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)`), draws a corner plot against the truth (the paper's
//!   Figure 3 style) and rewrites `report.md` (table + log-scale curve `divergence.png`).
//! - [`run_experiment`]: generates the data, creates (or resumes) the run directory and runs every lap.
//!
//! # Presets
//!
//! | preset | observations | laps | steps/lap (batch) | MLP | E-step | metric |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | [`ManifoldConfig::paper`] | 65,536 | 32 | 65,536 (1024) | 3×256 | PC T = 4096, Tweedie + CG 3 | 16,384 points, λ = 1e-3 |
//! | [`ManifoldConfig::reference`] | 65,536 | 64 | 65,536 (1024) | 3×256 | PC T = 4096, `cov_x` + CG to rtol 1e-3 | as paper |
//! | [`ManifoldConfig::demo`] | 4,096 | 16 | 4,096 (256) | 3×128 | PC T = 32, Tweedie + CG 3 | 1,024 points, λ = 0.25 |
//! | [`ManifoldConfig::tiny`] | 128 | 1 | 8 (32) | 2×16 | PC T = 4 | 48 points, λ = 0.1 |
//!
//! The demo keeps every algorithmic choice of the paper (Gaussian EM initialization of rank 5, MMPS with the
//! Tweedie covariance and 3 CG iterations, predictor-corrector with C = 1 and τ = 0.1, Adam 1e-3 → 1e-6,
//! clipping, the (−3, 3) filter) and shrinks only sizes so that it runs in minutes on a 2-core CPU: fewer
//! observations, laps, training steps, sampler steps (E-step PC T = 32, Gaussian-EM DDIM T = 32) and a
//! narrower MLP. Its metric is reduced too: the paper's λ = 1e-3 on 16,384 points means up to 1,024
//! log-domain iterations over a 16k × 16k cost (hours on such a CPU; even λ = 1e-2 on 512 points runs all
//! 1,024 iterations without reaching the tolerance), while 1,024 points at λ = 0.25 converge in a few hundred
//! iterations (seconds).
//! The prior samples of the demo's metric use PC with T = 128 (they are cheap: no guidance). Divergences of
//! different presets are therefore not comparable with each other, only across laps of one run.
//!
//! ```no_run
//! use diem_manifold::{run_experiment, ManifoldConfig, RunOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let summary = run_experiment(&ManifoldConfig::demo(), "runs/demo".as_ref(), &RunOptions::default())?;
//! println!("{}", summary.report.display());
//! # Ok(())
//! # }
//! ```
//!
//! The binary `diem-manifold` (run through `cargo xtask demo`, `cargo xtask reproduce-manifold` and
//! `cargo xtask bench em`) drives it from the command line; `diem-manifold --help` lists its options.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod bench;
mod config;
mod data;
mod error;
mod observer;
mod report;
mod run;

pub use bench::{bench_em, matmul_peak, mlp_macs, BenchReport};
pub use config::{DataConfig, ManifoldConfig, MetricConfig};
pub use data::{filter_inside, to_host, ManifoldData};
pub use error::{Error, ManifoldError, Result};
pub use observer::{gaussian_samples, ManifoldObserver, GAUSSIAN_CORNER_FILE, LAP_CORNER_FILE};
pub use report::{
    corner_path, report_markdown, write_report, EStepRecord, Evaluator, LapRecord, CURVE_FILE, FILTER_BOUND,
    RECORDS_FILE, REPORT_FILE,
};
pub use run::{run_experiment, stored_config, ExperimentSummary, RunOptions, MANIFOLD_CONFIG_FILE};
