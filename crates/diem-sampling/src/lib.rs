//! Diffusion samplers and posterior guidance for diem (docs/method.md §4–5).
//!
//! **Samplers** ([`Sampler`]): [`Ddpm`] (η = 1), [`Ddim`] (η = 0, optional η), [`PredictorCorrector`]
//! (DDIM predictor + Langevin corrector), and the deterministic probability-flow ODE solvers [`Euler`]
//! (= DDIM in VE), [`Heun`] (second order, two calls per step) and [`DpmPp2m`] (DPM-Solver++(2M), second
//! order, one call per step) over any [`Denoiser`](diem_models::Denoiser), on a [`TimeGrid`]
//! (uniform `t_k = 1 − k/T` by default) under a [`Schedule`](diem_models::Schedule). They start at
//! `μ_x + σ(1) z`, end with one extra denoise at `σ(0)` (`T·calls_per_step + 1` calls), draw noise from a
//! [`NoiseRng`] (seeded on the host, or libtorch's generator), report progress to a [`StepObserver`], and run
//! under `no_grad` so memory stays flat in the number of steps.
//!
//! **Posterior guidance** (docs/method.md §5) wraps a prior denoiser and an observation `y = A x + ε`:
//! [`Mmps`] (Tweedie covariance through VJPs, or a [`CovHeuristic`]: `zeros`, `cov_t`, `ones`, `cov_x`),
//! [`Pgdm`], [`Tmpd`] and [`DiffPir`] are denoisers; [`Dps`] is a sampler. All are VE forms (α_t = 1) with
//! per-sample operators, noise levels and solves, and count their forwards/VJPs in [`GuidanceStats`].
//!
//! ```
//! use diem_linalg::Dplr;
//! use diem_models::{GaussianDenoiser, VeSchedule};
//! use diem_operators::{NoiseCov, Projection};
//! use diem_sampling::{Ddim, Mmps, MmpsConfig, NoiseRng, Sampler, TimeGrid};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Prior N(0, I) in 4-D, 16 observations through their own random 2×4 projections.
//! let prior = GaussianDenoiser::new(Tensor::zeros([4], (Kind::Double, Device::Cpu)),
//!                                   Dplr::identity(4, Kind::Double, Device::Cpu))?;
//! let op = Projection::random_sphere(16, 2, 4, 0)?;
//! let y = Tensor::zeros([16, 2], (Kind::Double, Device::Cpu));
//! let posterior = Mmps::new(&prior, &op, &y, NoiseCov::isotropic(0.1)?, MmpsConfig::cg(2))?;
//! let sampler = Ddim::new(VeSchedule::default(), TimeGrid::uniform(32)?);
//! let x = sampler.sample(&posterior, &[16, 4], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0))?;
//! assert_eq!(x.size(), vec![16, 4]);
//! assert_eq!(posterior.stats().vjps, 33 * 2); // (T + 1) calls × 2 CG iterations (one VJP each)
//! # Ok(())
//! # }
//! ```
//!
//! **The posterior vocabulary** ([`spec`], [`posterior`]): every caller (the E-step of an EM run, `diem
//! posterior`, the benchmarks) names a method with one serde-able [`PosteriorMethod`] and a sampler with one
//! [`SamplerSpec`], the forms of diem's configuration files. MMPS is the plain object
//! `{"covariance": "tweedie" | "cov_x" | "cov_t" | "ones" | "zeros", "solver": {…}, "safeguards": {…}}`;
//! the baselines are tagged: `{"dps": {"zeta": 1.0}}`, `{"pgdm": {…}}`, `{"tmpd": {…}}`,
//! `{"diffpir": {"lambda": 8.0, …}}`. [`PosteriorMethod::NAMES`] and [`PosteriorMethod::from_name`] are the
//! command line's names (`mmps`, `mmps-cov-x`, …, `dps`). A method [`validates`](PosteriorMethod::validate)
//! with errors naming the field, reports its [cost per call](PosteriorMethod::cost_per_call), resolves to a
//! [`GuidanceConfig`] (with Σ_x for `cov_x`) and [builds](PosteriorMethod::build) a [`Posterior`] for a prior
//! denoiser and a [`Measurement`] with per-sample operators and noise. A [`Posterior`] samples with any
//! [`Sampler`]; DPS, a sampler of its own, runs its step on that sampler's schedule and grid.
//!
//! ```
//! use diem_linalg::Dplr;
//! use diem_models::{GaussianDenoiser, VeSchedule};
//! use diem_operators::{NoiseCov, Projection};
//! use diem_sampling::{Measurement, NoiseRng, PosteriorMethod, SamplerSpec, SolverSpec};
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let prior = GaussianDenoiser::new(Tensor::zeros([4], (Kind::Double, Device::Cpu)),
//!                                   Dplr::identity(4, Kind::Double, Device::Cpu))?;
//! let op = Projection::random_sphere(8, 2, 4, 0)?;
//! let y = Tensor::zeros([8, 2], (Kind::Double, Device::Cpu));
//! let sampler = SamplerSpec::Ddpm { steps: 16 }.build(VeSchedule::default())?;
//! // From a configuration file, or by name as `diem posterior --method` does.
//! let from_json: PosteriorMethod = serde_json::from_str(r#"{"dps": {"zeta": 0.5}}"#)?;
//! let by_name = PosteriorMethod::from_name("mmps", SolverSpec::cg(2))?;
//! for method in [from_json, by_name] {
//!     let measurement = Measurement::new(&op, &y, NoiseCov::isotropic(0.1)?)?;
//!     let (x, stats) = method.sample(&prior, measurement, None, sampler.as_ref(),
//!                                    (Kind::Double, Device::Cpu), &mut NoiseRng::seeded(0))?;
//!     assert_eq!(x.size(), vec![8, 4]);
//!     let cost = method.cost_per_call();
//!     assert_eq!(stats.vjps, stats.calls * cost.vjps); // DPS: 16 steps × 1; MMPS: 17 calls × 2
//! }
//! assert!(PosteriorMethod::from_name("magic", SolverSpec::cg(1)).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! Layering: this crate depends on diem-linalg, diem-operators and diem-models only.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod counting;
pub mod error;
pub mod guidance;
pub mod posterior;
pub mod rng;
pub mod sampler;
pub mod spec;
pub mod tds;

pub use counting::CountingDenoiser;
pub use error::{Error, Result, SamplingError};
pub use guidance::{
    CovHeuristic, DiffPir, DiffPirConfig, DiffPirGuidance, Dps, Guidance, GuidanceCall, GuidanceStats,
    Guided, Measurement, Mmps, MmpsConfig, MmpsGuidance, Pgdm, PgdmConfig, PgdmGuidance, SolverConfig, Tmpd,
    TmpdConfig, TmpdGuidance,
};
pub use posterior::{GuidanceConfig, Posterior};
pub use rng::NoiseRng;
pub use sampler::ddim::{ddim_update, Ddim};
pub use sampler::ddpm::{ddpm_update, Ddpm};
pub use sampler::dpmpp::{dpmpp2m_update, DpmPp2m, MultistepState};
pub use sampler::ode::{euler_update, ode_slope, Euler, Heun};
pub use sampler::pc::PredictorCorrector;
pub use sampler::{
    denoise_at, sigma_tensor, start_from_noise, Sampler, Silent, StepInfo, StepObserver, TimeGrid,
};
pub use spec::{
    Covariance, DiffPirSpec, DpsSpec, MmpsSpec, PgdmSpec, PosteriorMethod, SafeguardSpec, SamplerSpec,
    SolverMethod, SolverSpec, StepCost, TmpdSpec, MAX_ITERATIONS, MAX_STEPS,
};
pub use tds::{Tds, TdsConfig, TdsDiagnostics, TdsOutput, TdsSpec, Twist};
