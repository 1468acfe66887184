//! Diffusion expectation-maximization (SPEC.md §7.4, §8): learn a diffusion prior from incomplete, noisy
//! observations `y_i = A_i x_i + ε_i`, starting from a Gaussian prior fitted by EM.
//!
//! - [`fit_gaussian`] / [`fit_gaussian_with`]: `fit_moments` (SPEC.md §7.4), the Gaussian initial prior
//!   [`GaussianPrior`] `N(μ_x, Σ_x)` with a DPLR covariance of a chosen rank: exact Gaussian denoiser + MMPS on
//!   the `cov_x` path + DDIM, then PPCA, `iterations` times.
//! - [`EmRun`]: the DiEM loop in a run directory ([`layout`]): Gaussian initialization, then laps of E-step
//!   ([`posterior_samples`]: k posterior samples per observation, each with its own operator, MMPS with the
//!   Tweedie covariance or a heuristic, CG/GMRES/BiCGSTAB, DDPM/DDIM/PC, chunked) and M-step ([`m_step`]:
//!   continue from the previous (EMA) weights, fresh optimizer, restarted EMA), with the optional filter
//!   (−3, 3) and the optional PPCA refit of μ_x. Both lap orders of SPEC.md §8 ([`LapOrder`]).
//! - [`LapObserver`]: per-lap hooks with a [`LapContext`] (lap, run dir, current prior, samples, metrics).
//! - Crash safety: every file is written atomically; `state.bin` is the commit point;
//!   [`EmRun::resume`] continues after the last committed step and reproduces the uninterrupted run
//!   bit-exactly on CPU (every lap, chunk and M-step derives its seed with [`derive_seed`]).
//!
//! `metrics.jsonl` holds one line per lap with: `lap`, `loss_mean`, `loss_std`, `loss_last`, `estep_seconds`,
//! `mstep_seconds`, `lap_seconds`, `samples`, `kept`, `kept_fraction`, `sample_mean`, `sample_std` (of the
//! kept samples), the observation-space diagnostic `obs_mean_rms`, `obs_std_rms`, `obs_residual_rms`,
//! `obs_noise_rms`, `obs_sinkhorn` ([`observation_diagnostic`]); with a validation set
//! ([`EmRun::with_validation`]) also `val_loss_last`, `val_loss_min` and `validation_seconds`; plus the
//! observers' fields.
//!
//! ```no_run
//! use diem_em::{EmConfig, EmRun, LapContext, LapObserver};
//! use diem_operators::Observation;
//!
//! struct KeptMean;
//! impl LapObserver for KeptMean {
//!     fn name(&self) -> &str { "kept-mean" }
//!     fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> diem_em::Result<()> {
//!         let m = ctx.kept.mean(tch::Kind::Double).double_value(&[]);
//!         ctx.add_metric("kept_mean", m);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let obs = Observation::load("obs.npz", tch::Device::Cpu)?;
//! let mut run = EmRun::create("runs/x", EmConfig::manifold(32), obs, tch::Device::Cpu)?
//!     .with_observer(KeptMean);
//! run.run()?;
//! // After a crash: EmRun::resume("runs/x", Observation::load("obs.npz", tch::Device::Cpu)?, tch::Device::Cpu)?.run()?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod config;
pub mod diagnostics;
pub mod dist;
pub mod error;
pub mod estep;
pub mod gaussian;
pub mod io;
pub mod layout;
pub mod mstep;
pub mod observer;
pub mod run;
pub mod seed;

pub use config::{
    Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, GaussianEmConfig, LapOrder,
    PosteriorSpec, RefitConfig, SafeguardSpec, SamplerSpec, SolverMethod, SolverSpec, CONFIG_VERSION,
};
pub use diagnostics::{observation_diagnostic, sample_stats, ObservationDiagnostic, SampleStats};
pub use error::{EmError, Error, Result};
pub use estep::{posterior_samples, posterior_shard, EStepPlan, EStepShard};
pub use gaussian::{cov_x_mmps, fit_gaussian, fit_gaussian_on, fit_gaussian_with, GaussianPrior};
pub use io::{read_npy, write_npy, RunState};
pub use mstep::{filter_samples, m_step, m_step_parallel, m_step_validated, ValidationRecord};
pub use observer::{LapContext, LapObserver};
pub use run::{resolve_checkpoint, EmRun, RunSummary};
pub use seed::{derive_seed, SeedPurpose};
