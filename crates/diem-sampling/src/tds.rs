//! TDS: the twisted diffusion sampler with MMPS's moment-matched likelihood as its twisting function
//! (docs/method.md §5.7; paper §5.1 and §6).
//!
//! TDS (Wu, Trippe, Naesseth, Blei, Cunningham, "Practical and Asymptotically Exact Conditional Sampling in
//! Diffusion Models", NeurIPS 2023, arXiv:2306.17775) is a sequential Monte Carlo sampler over the reverse
//! diffusion: `K` particles per observation are moved by a guided proposal, reweighted so that their weighted
//! law tracks `p(x_t) p̃_t(y | x_t)`, resampled when the weights degenerate, and at the end reweighted with the
//! exact likelihood `p(y | x_0)`. Whatever the twisting function `p̃_t`, the weighted particles target the exact
//! posterior of the model's reverse process as `K → ∞`; a good `p̃_t` makes few particles enough. The paper
//! (§6) names MMPS's moment-matched likelihood as a natural twisting function; this module uses it:
//!
//! ```text
//! p̃_t(y | x_t) = N(y; A d(x_t, σ_t), Σ_y + σ_t² A J Aᵀ)            (paper eq. 19 with V = σ_t² J)
//! ```
//!
//! with `J = ∂d/∂x_t` the denoiser's Jacobian ([`Twist::Tweedie`]), or the cheap form with a closed-form
//! covariance `V = c_t I` ([`Twist::CovT`], [`Twist::Ones`]).
//!
//! The algorithm on the sampler's time grid `t_0 > … > t_T` (VE, `α_t = 1`), per observation and particle `k`:
//!
//! ```text
//! x_{t_0}^k = μ_x + σ_{t_0} z                                       (as every sampler, docs/method.md §4.1)
//! log w^k   = log p̃_{t_0}(y | x_{t_0}^k)
//! for each step t → s:
//!     resample (systematic) where ESS = 1 / Σ_k W_k² < threshold · K   (W the normalized weights)
//!     d̃ = d + Δ,   Δ = σ_t² Jᵀ Aᵀ (Σ_y + A V Aᵀ)⁻¹ (y − A d)          (the MMPS posterior denoiser)
//!     x_s = x_t + τ (d̃ − x_t) + σ_s √τ ε,   τ = 1 − σ_s²/σ_t²           (the DDPM step, docs/method.md §4.2)
//!     log w += log p(x_s | x_t) − log q(x_s | x_t, y) + log p̃_s(y | x_s) − log p̃_t(y | x_t)
//! x_0 = d(x_{t_T}, σ_{t_T});   log w += log N(y; A x_0, Σ_y) − log p̃_{t_T}(y | x_{t_T})
//! return particles drawn from the final weights
//! ```
//!
//! where `p(x_s | x_t) = N(x_t + τ (d − x_t), τ σ_s² I)` is the prior's DDPM transition and
//! `q(x_s | x_t, y) = N(x_t + τ (d̃ − x_t), τ σ_s² I)` the guided one; their log-ratio at the drawn `x_s` is
//! `−τ ‖Δ‖² / (2 σ_s²) − √τ ⟨Δ, ε⟩ / σ_s` (computed in f64 from `Δ` and `ε`, with no cancellation). Every
//! log-weight is an f64 tensor; non-finite increments (a particle that became NaN) give weight 0.
//!
//! The running product of the weights' means is the SMC estimate of the evidence `p(y)` under the model
//! ([`TdsDiagnostics::log_normalizer`]); constants of `log p̃_t` that do not depend on `x_t` telescope out of it
//! and out of the normalized weights, which is why the heuristic twists may drop their log-determinant.
//!
//! The network forward and the VJPs of one level serve both the twisting weight at that level and the
//! proposal of the next step, so a level costs one twisting evaluation ([`Tds`] lists the costs).

use std::cell::RefCell;

use diem_models::{Denoiser, Schedule};
use diem_operators::{LinearOperator, NoiseCov, Observation};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SamplingError};
use crate::guidance::{forward_with_graph, GuidanceStats, Measurement, SolverConfig, StatsCell, Tape};
use crate::rng::NoiseRng;
use crate::sampler::ddpm::ddpm_update;
use crate::sampler::{start_from_noise, Sampler, StepInfo, StepObserver, TimeGrid};

/// The most particles per observation a configuration may ask for.
pub const MAX_PARTICLES: usize = 1 << 20;

/// The twisting function's covariance `V` in `p̃_t(y | x_t) = N(y; A d(x_t), Σ_y + A V Aᵀ)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Twist {
    /// `V = σ_t² J` (MMPS's moment-matched likelihood, paper eq. 19): `A J Aᵀ` is built densely with one VJP per
    /// observed entry (`m` per level), symmetrized, its negative eigenvalues clamped to 0, and
    /// `Σ_y + σ_t² A J Aᵀ` factored by a batched Cholesky in f64 (log-determinant and solve). Cost per level:
    /// 1 forward and `m` VJPs over all particles, `O(m³)` per particle, and `m` x-sized vectors per particle in
    /// memory. For small `m` (the manifold's 2, the tests' 2–4); the default.
    #[default]
    Tweedie,
    /// `V = σ_t² I` (MMPS's `cov_t` heuristic): the system `Σ_y + σ_t² A Aᵀ` is solved by CG without the network;
    /// cost per level: 1 forward and 1 VJP, whatever `m`.
    CovT,
    /// `V = σ_t²/(1 + σ_t²) I` (MMPS's `ones` heuristic, PiGDM's covariance); costs as [`Twist::CovT`].
    Ones,
}

impl Twist {
    /// The configuration name: `"tweedie"`, `"cov_t"`, `"ones"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tweedie => "tweedie",
            Self::CovT => "cov_t",
            Self::Ones => "ones",
        }
    }

    /// The isotropic covariance factor `c_t` of a heuristic twist (`V = c_t I`); `None` for Tweedie.
    fn factor(self, sigma: f64) -> Option<f64> {
        let s2 = sigma * sigma;
        match self {
            Self::Tweedie => None,
            Self::CovT => Some(s2),
            Self::Ones => Some(s2 / (1.0 + s2)),
        }
    }
}

/// TDS as configured (docs/method.md §5.7): `{"particles": 16, "ess_threshold": 0.5, "twist": "tweedie"}`
/// (every field optional; these are the defaults). In a configuration's `posterior` it is tagged:
/// `{"tds": {"particles": 16}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdsSpec {
    /// Particles `K` per observation (1 ..= [`MAX_PARTICLES`]; `K = 1` is the guided DDPM sampler).
    pub particles: usize,
    /// Resample an observation's particles when their effective sample size falls below
    /// `ess_threshold · K` (in `[0, 1]`: 0 never resamples, 1 resamples at every step; default 0.5).
    pub ess_threshold: f64,
    /// The twisting function's covariance.
    pub twist: Twist,
}

impl Default for TdsSpec {
    fn default() -> Self {
        Self { particles: 16, ess_threshold: 0.5, twist: Twist::Tweedie }
    }
}

impl TdsSpec {
    /// Checks `particles` (`1..=`[`MAX_PARTICLES`]) and `ess_threshold` (in `[0, 1]`).
    ///
    /// # Errors
    /// [`SamplingError::Config`] naming `tds.particles` or `tds.ess_threshold`.
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 || self.particles > MAX_PARTICLES {
            return Err(SamplingError::config(
                "tds.particles",
                format!("must lie in 1..={MAX_PARTICLES}, got {}", self.particles),
            ));
        }
        if !(0.0..=1.0).contains(&self.ess_threshold) {
            return Err(SamplingError::config(
                "tds.ess_threshold",
                format!("must lie in [0, 1] (a fraction of the particles), got {}", self.ess_threshold),
            ));
        }
        Ok(())
    }

    /// The sampler's configuration (one sample per observation, the default batch and solver).
    pub fn to_config(&self) -> TdsConfig {
        TdsConfig {
            particles: self.particles,
            ess_threshold: self.ess_threshold,
            twist: self.twist,
            ..Default::default()
        }
    }
}

/// [`Tds`]'s settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TdsConfig {
    /// Particles `K` per observation (≥ 1).
    pub particles: usize,
    /// Resampling threshold as a fraction of `K` (in `[0, 1]`; default 0.5, i.e. ESS < K/2).
    pub ess_threshold: f64,
    /// The twisting function's covariance (default [`Twist::Tweedie`]).
    pub twist: Twist,
    /// Samples returned per observation, drawn from the final weights by systematic resampling (default 1).
    pub samples: usize,
    /// The most particles in one network call (default 16,384): observations are processed in groups of
    /// `max(1, max_particles / K)`, each group over the whole trajectory (particles of one observation are
    /// never split). Memory is that of one guided call on `group · K` samples, times `m` x-sized vectors with
    /// the Tweedie twist. The noise stream is consumed group after group, so this setting is part of what a seed
    /// reproduces.
    pub max_particles: usize,
    /// The CG solve of the heuristic twists' system `Σ_y + c_t A Aᵀ` (no network inside; default 64 iterations
    /// to a relative tolerance of 1e-10). Unused by [`Twist::Tweedie`], whose system is factored exactly.
    pub solver: SolverConfig,
}

impl Default for TdsConfig {
    fn default() -> Self {
        Self {
            particles: 16,
            ess_threshold: 0.5,
            twist: Twist::Tweedie,
            samples: 1,
            max_particles: 16_384,
            solver: SolverConfig::cg(64).with_rtol(Some(1e-10)),
        }
    }
}

impl TdsConfig {
    /// `particles` particles per observation with the other defaults.
    pub fn new(particles: usize) -> Self {
        Self { particles, ..Self::default() }
    }

    /// Sets the twist.
    pub fn with_twist(mut self, twist: Twist) -> Self {
        self.twist = twist;
        self
    }

    /// Sets the resampling threshold (a fraction of `K`).
    pub fn with_ess_threshold(mut self, threshold: f64) -> Self {
        self.ess_threshold = threshold;
        self
    }

    /// Sets the samples returned per observation.
    pub fn with_samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    /// Sets the most particles per network call.
    pub fn with_max_particles(mut self, max_particles: usize) -> Self {
        self.max_particles = max_particles;
        self
    }

    fn validate(&self) -> Result<()> {
        TdsSpec { particles: self.particles, ess_threshold: self.ess_threshold, twist: self.twist }
            .validate()?;
        if self.samples == 0 {
            return Err(SamplingError::config("TdsConfig.samples", "must be at least 1"));
        }
        if self.max_particles == 0 {
            return Err(SamplingError::config("TdsConfig.max_particles", "must be at least 1"));
        }
        self.solver.validate("TdsConfig.solver")
    }
}

/// What one TDS run reports, per observation (`N` observations, `T` steps).
#[derive(Debug)]
pub struct TdsDiagnostics {
    /// The effective sample size `1 / Σ_k W_k²` of the normalized weights, `[T + 2, N]` f64: after the initial
    /// twisting, after each step's reweighting (before the next resampling decision), and after the final
    /// exact-likelihood correction. In `[1, K]` wherever some particle has a positive weight.
    pub ess: Tensor,
    /// How many steps resampled each observation's particles, `[N]` int64.
    pub resamplings: Tensor,
    /// The SMC estimate of `log p(y)` under the model's reverse process, `[N]` f64: the sum over levels of
    /// `log Σ_k W_k exp(Δ log w_k)` (−∞ where every particle lost its weight).
    pub log_normalizer: Tensor,
}

/// TDS's samples and diagnostics.
#[derive(Debug)]
pub struct TdsOutput {
    /// `[N, samples, ..x_shape]`, detached, in the sampling kind.
    pub samples: Tensor,
    /// Weights, resampling and evidence per observation.
    pub diagnostics: TdsDiagnostics,
}

/// The twisted diffusion sampler with MMPS's likelihood as the twisting function (module documentation;
/// docs/method.md §5.7). It runs its own transition (the DDPM step with the MMPS posterior denoiser) on a
/// sampler's schedule and time grid, like DPS, and is built for a prior denoiser and a [`Measurement`] whose
/// observation `i` has its own operator `A_i` and noise: the particles of observation `i` use them.
///
/// Costs ([`Tds::stats`]), per level (the initial one and one per step: `T + 1` calls) over all particles of
/// a group: 1 batched forward and `m` batched VJPs ([`Twist::Tweedie`], `m` the observed entries per
/// observation) or 1 VJP (heuristic twists), i.e. `K` times the batch of a one-sample guided sampler. The
/// network's output at a level gives both the weight there and the next proposal's mean; the final sample is
/// the last level's prior denoise, so the run makes no extra call. With the Tweedie twist, the particles
/// whose `A J Aᵀ` had a negative eigenvalue (clamped to 0) are counted in [`GuidanceStats::fallbacks`].
///
/// Resampling draws its uniforms as `Φ(z)` of the [`NoiseRng`]'s normals (one per observation per step and
/// one per observation at the end), so a seeded `NoiseRng` reproduces the whole run.
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{GaussianDenoiser, VeSchedule};
/// use diem_operators::{NoiseCov, Projection};
/// use diem_sampling::{Ddpm, NoiseRng, Sampler, Tds, TdsConfig, TimeGrid};
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(Tensor::zeros([4], (Kind::Double, Device::Cpu)),
///                                   Dplr::identity(4, Kind::Double, Device::Cpu))?;
/// let op = Projection::random_sphere(3, 2, 4, 0)?;
/// let y = Tensor::zeros([3, 2], (Kind::Double, Device::Cpu));
/// let tds = Tds::new(&prior, &op, &y, NoiseCov::isotropic(0.1)?, TdsConfig::new(8))?;
/// let sampler = Ddpm::new(VeSchedule::default(), TimeGrid::uniform(16)?);
/// let out = tds.sample(&sampler, Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0), &mut diem_sampling::Silent)?;
/// assert_eq!(out.samples.size(), vec![3, 1, 4]);
/// assert_eq!(out.diagnostics.ess.size(), vec![18, 3]);
/// assert_eq!(tds.stats().vjps, 17 * 2); // (T + 1) levels × m = 2 VJPs
/// # Ok(())
/// # }
/// ```
pub struct Tds<'a> {
    prior: &'a dyn Denoiser,
    measurement: Measurement<'a>,
    config: TdsConfig,
    stats: StatsCell,
    /// The diagnostics of the last run of [`Tds::sample`] through [`crate::Posterior`].
    last: RefCell<Option<TdsDiagnostics>>,
}

/// The particle-level problem of one group of observations.
struct Group {
    op: Box<dyn LinearOperator>,
    y: Tensor,
    noise: NoiseCov,
    /// Observations in the group.
    g: i64,
}

/// One level's twisting evaluation for every particle.
struct Level {
    /// The prior denoiser's output `d(x_t, σ_t)`, detached, `[P, ..x_shape]`.
    d: Tensor,
    /// The MMPS correction `Δ = σ_t² Jᵀ Aᵀ v`, detached, `[P, ..x_shape]`.
    delta: Tensor,
    /// `log p̃_t(y | x_t)`, `[P]` f64.
    log_twist: Tensor,
}

impl Level {
    fn select(&self, index: &Tensor) -> Self {
        Self {
            d: self.d.index_select(0, index),
            delta: self.delta.index_select(0, index),
            log_twist: self.log_twist.index_select(0, index),
        }
    }
}

/// The weights of a group: normalized log-weights `[G, K]` and running diagnostics.
struct Weights {
    log_w: Tensor,
    log_z: Tensor,
    ess: Vec<Tensor>,
    resamplings: Tensor,
}

impl Weights {
    /// Starts from unnormalized log-weights `[G, K]`.
    fn new(log_w: Tensor) -> Self {
        let g = log_w.size()[0];
        let k = log_w.size()[1] as f64;
        let zeros = Tensor::zeros([g], (Kind::Double, log_w.device()));
        let mut w = Self {
            log_w: log_w.full_like(-k.ln()),
            log_z: zeros.shallow_clone(),
            ess: Vec::new(),
            resamplings: zeros.to_kind(Kind::Int64),
        };
        w.update(&log_w);
        w
    }

    /// Multiplies by `exp(increment)` (`[G, K]` f64; non-finite entries give weight 0), adds the log-mean of the
    /// increments under the current weights to `log_z`, renormalizes and records the ESS. An observation whose
    /// particles all lost their weight keeps uniform weights (and `log_z = −∞`).
    fn update(&mut self, increment: &Tensor) {
        let k = self.log_w.size()[1] as f64;
        let inc = increment.to_kind(Kind::Double);
        let inc = inc.where_self(&inc.isfinite(), &inc.full_like(f64::NEG_INFINITY));
        let log_w = &self.log_w + inc;
        let lse = log_w.logsumexp([1], true);
        let alive = lse.isfinite();
        let normalized = (&log_w - &lse).where_self(&alive, &log_w.full_like(-k.ln()));
        self.log_z = &self.log_z + lse.squeeze_dim(1);
        self.log_w = normalized;
        self.ess.push(self.ess_now());
    }

    /// `1 / Σ_k W_k²`, `[G]`.
    fn ess_now(&self) -> Tensor {
        (self.log_w.exp().square().sum_dim_intlist(1, false, Kind::Double)).reciprocal()
    }
}

/// Systematic resampling: for each row of normalized log-weights `[G, K]` and a uniform `u : [G, 1]`, the
/// indices `i_j = #{i : C_i ≤ (u + j)/n}`, `j = 0..n`, `C` the cumulative weights, as `[G, n]` int64.
fn systematic(log_w: &Tensor, u: &Tensor, n: i64) -> Tensor {
    let k = log_w.size()[1];
    let cdf = log_w.exp().cumsum(1, Kind::Double);
    let positions = (u + Tensor::arange(n, (Kind::Double, log_w.device())).unsqueeze(0)) / n as f64
        * cdf.narrow(1, k - 1, 1);
    positions.searchsorted(&cdf.contiguous(), false, true, "right", None::<Tensor>).clamp(0, k - 1)
}

/// Uniforms `Φ(z)` in `[0, 1)` from `g` standard normals of `rng`, `[g, 1]` f64 on `device`.
fn uniforms(rng: &mut NoiseRng, g: i64, device: Device) -> Tensor {
    let z = rng.normal(&[g, 1], Kind::Double, device);
    ((-z / std::f64::consts::SQRT_2).erfc() * 0.5).clamp(0.0, 1.0 - f64::EPSILON)
}

impl<'a> Tds<'a> {
    /// TDS for the prior denoiser `prior` and the observations `y = A x + ε`, `A = operator`, `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Measurement::new`]; [`SamplingError::Config`] for a bad configuration or a zero noise deviation
    /// (the final weights need the exact likelihood's `Σ_y⁻¹`).
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: TdsConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// TDS conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`Tds::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: TdsConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// TDS conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// As [`Tds::new`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: TdsConfig,
    ) -> Result<Self> {
        config.validate()?;
        measurement.require_positive_noise("tds (the exact likelihood of the final weights)")?;
        Ok(Self { prior, measurement, config, stats: StatsCell::default(), last: RefCell::new(None) })
    }

    /// The configuration.
    pub fn config(&self) -> &TdsConfig {
        &self.config
    }

    /// The measurement conditioned on.
    pub fn measurement(&self) -> &Measurement<'a> {
        &self.measurement
    }

    /// Costs counted so far (`calls`: twisting evaluations, one per level and group).
    pub fn stats(&self) -> GuidanceStats {
        self.stats.get()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// The diagnostics of the last run made through [`crate::Posterior::sample`] (which returns only the
    /// samples), taken out; `None` before one or after they were taken.
    pub fn take_diagnostics(&self) -> Option<TdsDiagnostics> {
        self.last.borrow_mut().take()
    }

    /// [`Tds::sample`], keeping the diagnostics for [`Tds::take_diagnostics`] and returning the samples as
    /// `[N · samples, ..x_shape]` (observation-major).
    pub(crate) fn sample_rows(
        &self,
        sampler: &dyn Sampler,
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<Tensor> {
        let out = self.sample(sampler, kind, device, rng, observer)?;
        let mut shape = vec![-1];
        shape.extend(self.measurement.operator().x_shape());
        *self.last.borrow_mut() = Some(out.diagnostics);
        Ok(out.samples.reshape(shape.as_slice()))
    }

    /// Runs TDS on `sampler`'s schedule and time grid (its own transition rule is not used) for every
    /// observation, in `kind` on `device`; `observer` sees, after every step, the particle with the largest
    /// weight of each observation of the current group (`[G, ..x_shape]`).
    ///
    /// # Errors
    /// [`SamplingError::Config`] when a step ends at `σ = 0` (the DDPM proposal needs noise) or for an empty
    /// measurement; [`SamplingError::Torch`] when autograd cannot differentiate the prior or a factorization
    /// fails; [`SamplingError::Linalg`] when a heuristic twist's solve fails.
    pub fn sample(
        &self,
        sampler: &dyn Sampler,
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<TdsOutput> {
        self.sample_on(sampler.schedule(), sampler.grid(), kind, device, rng, observer)
    }

    /// [`Tds::sample`] on an explicit schedule and grid.
    ///
    /// # Errors
    /// As [`Tds::sample`].
    pub fn sample_on(
        &self,
        schedule: &dyn Schedule,
        grid: &TimeGrid,
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<TdsOutput> {
        let n = self.measurement.len();
        if n == 0 {
            return Err(SamplingError::config("tds", "no observations to condition on"));
        }
        if let Some((_, s)) = grid
            .pairs()
            .find(|&(_, s)| schedule.sigma_at(s).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            return Err(SamplingError::config(
                "tds",
                format!("the DDPM proposal needs σ > 0 at every step's end, got σ({s}) = 0"),
            ));
        }
        let k = self.config.particles as i64;
        let per_group = (self.config.max_particles as i64 / k).max(1);
        let (mut samples, mut ess, mut resamplings, mut log_z) = (vec![], vec![], vec![], vec![]);
        let mut start = 0;
        while start < n {
            let g = per_group.min(n - start);
            let group = self.group(start, g, device)?;
            let (x, w) = self.run_group(&group, schedule, grid, kind, device, rng, observer)?;
            samples.push(x);
            ess.push(Tensor::stack(&w.ess, 0));
            resamplings.push(w.resamplings);
            log_z.push(w.log_z);
            start += g;
        }
        Ok(TdsOutput {
            samples: Tensor::cat(&samples, 0),
            diagnostics: TdsDiagnostics {
                ess: Tensor::cat(&ess, 1),
                resamplings: Tensor::cat(&resamplings, 0),
                log_normalizer: Tensor::cat(&log_z, 0),
            },
        })
    }

    /// The operator, observations and noise of observations `start..start + g`, each repeated `K` times
    /// (particle `i·K + k` belongs to observation `start + i`), on `device`.
    fn group(&self, start: i64, g: i64, device: Device) -> Result<Group> {
        let k = self.config.particles as i64;
        let index: Vec<i64> = (start..start + g).flat_map(|i| std::iter::repeat_n(i, k as usize)).collect();
        let op = self.measurement.operator();
        let op = if op.batch() == 1 { op.boxed_clone() } else { op.select(&index) };
        let op = if op.device() == device { op } else { op.to_device(device) };
        let y =
            self.measurement.y().narrow(0, start, g).to_device(device).repeat_interleave_self_int(k, 0, None);
        let noise = self.measurement.noise().select(&index).to_device(device);
        Ok(Group { op, y, noise, g })
    }

    /// One group's whole trajectory: the samples `[G, samples, ..x_shape]` and the weights' diagnostics.
    #[allow(clippy::too_many_arguments)]
    fn run_group(
        &self,
        group: &Group,
        schedule: &dyn Schedule,
        grid: &TimeGrid,
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<(Tensor, Weights)> {
        let _guard = tch::no_grad_guard();
        let (g, k) = (group.g, self.config.particles as i64);
        let x_shape = self.measurement.operator().x_shape();
        let mut shape = vec![g * k];
        shape.extend(&x_shape);
        let offsets = (Tensor::arange(g, (Kind::Int64, device)) * k).unsqueeze(1);
        let identity = Tensor::arange(k, (Kind::Int64, device)).unsqueeze(0).expand([g, k], false);

        let sigma0 = schedule.sigma_at(grid.start());
        let mut x = start_from_noise(self.prior, sigma0, &rng.normal(&shape, kind, device))?;
        let mut level = self.twist(group, &x, sigma0)?;
        let mut weights = Weights::new(level.log_twist.reshape([g, k]));
        let steps = grid.steps();
        for (index, (t, s)) in grid.pairs().enumerate() {
            let (sigma_t, sigma_s) = (schedule.sigma_at(t), schedule.sigma_at(s));
            // Resample where the weights have degenerated.
            let threshold = self.config.ess_threshold * k as f64;
            let resample = weights.ess_now().lt(threshold).unsqueeze(1);
            let u = uniforms(rng, g, device);
            let drawn = systematic(&weights.log_w, &u, k).where_self(&resample, &identity);
            let flat = (drawn + &offsets).reshape([-1]);
            x = x.index_select(0, &flat);
            level = level.select(&flat);
            weights.log_w =
                weights.log_w.where_self(&resample.logical_not(), &weights.log_w.full_like(-(k as f64).ln()));
            weights.resamplings = &weights.resamplings + resample.squeeze_dim(1).to_kind(Kind::Int64);
            // Propose with the guided DDPM step and weigh by the prior's transition over the proposal's.
            let tau = 1.0 - (sigma_s * sigma_s) / (sigma_t * sigma_t);
            let eps = rng.normal_like(&x);
            let x_s = ddpm_update(&x, &(&level.d + &level.delta), sigma_t, sigma_s, &eps).detach();
            let delta = level.delta.to_kind(Kind::Double).reshape([g * k, -1]);
            let eps64 = eps.to_kind(Kind::Double).reshape([g * k, -1]);
            let log_ratio = delta.square().sum_dim_intlist(1, false, Kind::Double)
                * (-tau / (2.0 * sigma_s * sigma_s))
                - (&delta * &eps64).sum_dim_intlist(1, false, Kind::Double) * (tau.max(0.0).sqrt() / sigma_s);
            let next = self.twist(group, &x_s, sigma_s)?;
            let increment = log_ratio + &next.log_twist - &level.log_twist;
            weights.update(&increment.reshape([g, k]));
            x = x_s;
            level = next;
            let info = StepInfo { index, steps, t, s, sigma_t, sigma_s };
            observer.on_step(&info, &Self::best(&x, &weights.log_w, &offsets));
        }
        // The last level's twist is replaced by the exact likelihood at x_0 = d(x_{t_T}, σ_{t_T}).
        let x0 = level.d;
        let increment = self.log_likelihood(group, &x0) - &level.log_twist;
        weights.update(&increment.reshape([g, k]));
        let n = self.config.samples as i64;
        let u = uniforms(rng, g, device);
        let flat = (systematic(&weights.log_w, &u, n) + &offsets).reshape([-1]);
        let mut out_shape = vec![g, n];
        out_shape.extend(&x_shape);
        Ok((x0.index_select(0, &flat).reshape(out_shape.as_slice()).detach(), weights))
    }

    /// Each observation's particle of largest weight, `[G, ..x_shape]`.
    fn best(x: &Tensor, log_w: &Tensor, offsets: &Tensor) -> Tensor {
        let idx = (log_w.argmax(1, true) + offsets).reshape([-1]);
        x.index_select(0, &idx)
    }

    /// `log N(y; A x, Σ_y)` per particle, `[P]` f64 (docs/method.md §1).
    fn log_likelihood(&self, group: &Group, x: &Tensor) -> Tensor {
        let p = x.size()[0];
        let r = (group.y.to_kind(x.kind()) - group.op.apply(x)).to_kind(Kind::Double);
        let var = group.noise.mul(&r.ones_like()).reshape([p, -1]);
        let r = r.reshape([p, -1]);
        let m = r.size()[1] as f64;
        ((r.square() / &var).sum_dim_intlist(1, false, Kind::Double)
            + var.log().sum_dim_intlist(1, false, Kind::Double)
            + m * (2.0 * std::f64::consts::PI).ln())
            * -0.5
    }

    /// The twisting function at `(x_t, σ_t)` for every particle: the prior's denoise, the MMPS correction and
    /// `log p̃_t(y | x_t)` (module documentation).
    fn twist(&self, group: &Group, x_t: &Tensor, sigma: f64) -> Result<Level> {
        self.stats.update(|s| {
            s.calls += 1;
            s.forwards += 1;
        });
        let sigma_t = Tensor::from(sigma).to_kind(x_t.kind()).to_device(x_t.device());
        tch::with_grad(|| {
            let (x, x_hat) = forward_with_graph(self.prior, x_t, &sigma_t);
            if x_hat.size() != x_t.size() {
                return Err(SamplingError::shape(
                    "Tds::twist",
                    "denoiser output",
                    format!("{:?} (the input's shape)", x_t.size()),
                    &x_hat.size(),
                ));
            }
            let tape = Tape::new(&x_hat, &x, &self.stats);
            let op = group.op.as_ref();
            let d = x_hat.detach();
            let r = group.y.to_kind(d.kind()) - op.apply(&d);
            let level = match self.config.twist.factor(sigma) {
                None => self.tweedie(group, &tape, &r, sigma, &x_t.size())?,
                Some(c) => self.heuristic(group, &tape, &r, sigma, c)?,
            };
            tape.check()?;
            Ok(Level { d, delta: level.0, log_twist: level.1 })
        })
    }

    /// The Tweedie twist: `M = A Jᵀ Aᵀ` column by column (`m` VJPs), `K = Σ_y + σ² M₊` with `M₊` the
    /// symmetric part of `M` with negative eigenvalues set to 0, `v = K⁻¹ r` and `log det K` by Cholesky (f64),
    /// and `Δ = σ² Jᵀ Aᵀ v = σ² Σ_i v_i (Jᵀ Aᵀ e_i)` from the same VJPs. Returns `(Δ, log p̃)`.
    fn tweedie(
        &self,
        group: &Group,
        tape: &Tape<'_>,
        r: &Tensor,
        sigma: f64,
        x_size: &[i64],
    ) -> Result<(Tensor, Tensor)> {
        let op = group.op.as_ref();
        let p = r.size()[0];
        let y_shape = r.size();
        let r64 = r.to_kind(Kind::Double).reshape([p, -1]);
        let m = r64.size()[1];
        let eye = Tensor::eye(m, (r.kind(), r.device()));
        let mut columns = Vec::with_capacity(m as usize);
        let mut images = Vec::with_capacity(m as usize);
        for i in 0..m {
            let e = eye.get(i).unsqueeze(0).expand([p, m], false).reshape(y_shape.as_slice());
            let g = tape.vjp(&op.adjoint(&e), i + 1 < m);
            columns.push(op.apply(&g).to_kind(Kind::Double).reshape([p, m]));
            images.push(g.reshape([p, -1]));
        }
        tape.check()?;
        let a_j_at = Tensor::stack(&columns, 2);
        let sym = (&a_j_at + a_j_at.transpose(1, 2)) * 0.5;
        let (evals, evecs) = sym.f_linalg_eigh("L")?;
        let scale = evals.abs().amax([1], false).clamp_min(f64::MIN_POSITIVE);
        let negative = evals.amin([1], false).lt_tensor(&(&scale * -1e-6)).sum(Kind::Int64);
        self.stats.add_events(&negative, &negative.zeros_like());
        let psd = (&evecs * evals.clamp_min(0.0).unsqueeze(1)).matmul(&evecs.transpose(1, 2));
        let var = group.noise.mul(&r.ones_like()).to_kind(Kind::Double).reshape([p, m]);
        let system = var.diag_embed(0, -2, -1) + psd * (sigma * sigma);
        let chol = system.f_linalg_cholesky(false)?;
        let v = r64.unsqueeze(2).f_cholesky_solve(&chol, false)?.squeeze_dim(2);
        let log_det = chol.diagonal(0, -2, -1).log().sum_dim_intlist(1, false, Kind::Double) * 2.0;
        let quad = (&r64 * &v).sum_dim_intlist(1, false, Kind::Double);
        let log_twist = (quad + log_det + m as f64 * (2.0 * std::f64::consts::PI).ln()) * -0.5;
        let images = Tensor::stack(&images, 1); // [P, m, n]
        let delta = v.to_kind(images.kind()).unsqueeze(1).matmul(&images).squeeze_dim(1) * (sigma * sigma);
        Ok((delta.reshape(x_size), log_twist))
    }

    /// A heuristic twist `V = c I`: `v ≈ (Σ_y + c A Aᵀ)⁻¹ r` by CG (no network), `Δ = σ² Jᵀ Aᵀ v` (1 VJP) and
    /// `log p̃ = −½ rᵀ v` (the log-determinant does not depend on `x_t` and telescopes out). Returns `(Δ, log p̃)`.
    fn heuristic(
        &self,
        group: &Group,
        tape: &Tape<'_>,
        r: &Tensor,
        sigma: f64,
        c: f64,
    ) -> Result<(Tensor, Tensor)> {
        let op = group.op.as_ref();
        let k = |u: &Tensor| group.noise.mul(u) + op.apply(&op.adjoint(u)) * c;
        let (v, applications) = self.config.solver.solve(k, r)?;
        self.stats.update(|s| s.solver_applications += applications);
        let delta = tape.vjp(&op.adjoint(&v.to_kind(r.kind())), false) * (sigma * sigma);
        let p = r.size()[0];
        let quad = (r.to_kind(Kind::Double) * v.to_kind(Kind::Double)).reshape([p, -1]).sum_dim_intlist(
            1,
            false,
            Kind::Double,
        );
        Ok((delta, quad * -0.5))
    }
}

impl std::fmt::Debug for Tds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tds")
            .field("measurement", &self.measurement)
            .field("config", &self.config)
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}
