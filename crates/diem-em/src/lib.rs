//! Diffusion expectation-maximization (docs/method.md §7.4, §8): learn a diffusion prior from incomplete, noisy
//! observations `y_i = A_i x_i + ε_i`, starting from a Gaussian prior fitted by EM.
//!
//! - [`fit_gaussian`] / [`fit_gaussian_with`]: `fit_moments` (docs/method.md §7.4), the Gaussian initial prior
//!   [`GaussianPrior`] `N(μ_x, Σ_x)` with a DPLR covariance of a chosen rank: exact Gaussian denoiser + MMPS on
//!   the `cov_x` path + DDIM, then PPCA, `iterations` times.
//! - [`EmLoop`]: the DiEM loop in memory, without files: [`EmLoop::init`] (the Gaussian fit), then
//!   [`EmLoop::step`] per lap, each returning a [`LapOutcome`] (samples, loss curve, times).
//! - [`EmRun`]: the DiEM loop in a run directory ([`layout`]): Gaussian initialization, then laps of E-step
//!   ([`posterior_samples`]: k posterior samples per observation, each with its own operator, MMPS with the
//!   Tweedie covariance or a heuristic, CG/GMRES/BiCGSTAB, DDPM/DDIM/PC, chunked) and M-step ([`m_step`]:
//!   continue from the previous (EMA) weights, fresh optimizer, restarted EMA), with the optional filter
//!   (−3, 3) and the optional PPCA refit of μ_x. Both lap orders of docs/method.md §8 ([`LapOrder`]).
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
//! # The seams
//!
//! - **The model** ([`diem_models::ModelFactory`]): any tch network with the noise-conditional signature
//!   `forward_t(u, emb, train)` ([`diem_models::NoiseConditionalNet`]) trains, checkpoints and samples in
//!   DiEM: give its factory to [`EmLoop::with_model`] or [`EmRun::create_with_model`] (and
//!   [`EmRun::resume_with_model`]). The built-in MLP and U-Net are two factories, selected by
//!   `config.network`. See `examples/custom_network.rs`.
//! - **Persistence** ([`RunStore`]): [`EmLoop::run_with`] records every step in a store and commits it; the
//!   run directory ([`RunDir`], what [`EmRun`] uses) is one store, [`NoStore`] (in memory) another.
//! - **Progress** ([`diem_models::ProgressObserver`]): the laps, the Gaussian EM and E-step chunks and the
//!   M-step steps report to an observer ([`EmLoop::with_progress`], [`EmRun::with_progress`]); the default
//!   shows them in the terminal, or as timestamped log lines without one.
//! - **Per-lap hooks** ([`LapObserver`]) of a run directory, below.
//!
//! ```no_run
//! use std::rc::Rc;
//! use diem_em::{EmConfig, EmLoop};
//! use diem_models::{ModelFactory, NetworkConfig, NoiseConditionalNet, NoProgress};
//! use tch::nn::{self, Module};
//!
//! #[derive(Debug)]
//! struct Net(nn::Linear);
//! impl NoiseConditionalNet for Net {
//!     fn forward_t(&self, u: &tch::Tensor, emb: &tch::Tensor, _train: bool) -> tch::Tensor {
//!         self.0.forward(&tch::Tensor::cat(&[u.shallow_clone(), emb.shallow_clone()], -1))
//!     }
//!     fn embedding_features(&self) -> i64 { 4 }
//! }
//! struct NetFactory;
//! impl ModelFactory for NetFactory {
//!     fn describe(&self) -> NetworkConfig { NetworkConfig::custom("linear", serde_json::Value::Null) }
//!     fn build(&self, p: &nn::Path) -> diem_models::Result<Box<dyn NoiseConditionalNet>> {
//!         Ok(Box::new(Net(nn::linear(p / "linear", 5 + 4, 5, Default::default()))))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let observations = diem_operators::Observation::load("obs.npz", tch::Device::Cpu)?;
//! let mut em = EmLoop::with_model(
//!     EmConfig::manifold(4),
//!     observations,
//!     tch::Device::Cpu,
//!     Rc::new(NetFactory),
//!     Rc::new(diem_dist::Single),
//! )?
//! .with_progress(Rc::new(NoProgress));
//! em.init()?;
//! for _ in 0..4 {
//!     let lap = em.step()?;
//!     println!("lap {}: {} samples in {:.1} s", lap.lap, lap.samples.size()[0], lap.seconds());
//! }
//! # Ok(()) }
//! ```
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
pub mod emloop;
pub mod error;
pub mod estep;
pub mod gaussian;
pub mod io;
pub mod layout;
pub mod mstep;
pub mod observer;
pub mod run;
pub mod seed;
pub mod store;

pub use config::{
    Covariance, DataStorage, DiagnosticsConfig, DpsSpec, EStepConfig, EmConfig, GaussianEmConfig, LapOrder,
    MmpsSpec, PosteriorMethod, PosteriorSpec, RefitConfig, SafeguardSpec, SamplerSpec, SolverMethod,
    SolverSpec, CONFIG_VERSION,
};
pub use diagnostics::{observation_diagnostic, sample_stats, ObservationDiagnostic, SampleStats};
pub use emloop::{EmLoop, LapOutcome, LoopState};
pub use error::{EmError, Error, Result};
pub use estep::{
    posterior_samples, posterior_shard, posterior_shard_observed, ChunkSeeds, EStepPlan, EStepShard,
};
pub use gaussian::{cov_x_mmps, fit_gaussian, fit_gaussian_on, fit_gaussian_with, GaussianPrior};
pub use io::{read_npy, write_npy, RunState};
pub use mstep::{
    filter_samples, m_step, m_step_observed, m_step_parallel, m_step_validated, ValidationRecord,
};
pub use observer::{LapContext, LapObserver};
pub use run::{resolve_checkpoint, EmRun, RunDir, RunSummary};
pub use seed::{derive_seed, SeedPurpose};
pub use store::{NoStore, Restored, RunStore};
