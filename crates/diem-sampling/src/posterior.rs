//! One entry point for every posterior method: a [`PosteriorMethod`](crate::PosteriorMethod) (data) resolves
//! to a [`GuidanceConfig`] (the wrappers' settings, with Σ_x filled in), which builds a [`Posterior`] for a
//! prior denoiser and a [`Measurement`]; a [`Posterior`] samples with any [`Sampler`] and counts its costs.
//!
//! The denoiser wrappers (MMPS, PiGDM, TMPD, DiffPIR) run under the sampler they are given; DPS, a sampler of
//! its own (docs/method.md §5.3), runs its DDPM-plus-gradient step on that sampler's schedule and time grid;
//! so does TDS (docs/method.md §5.7), whose particles return one sample per observation.

use diem_models::{Denoiser, Schedule};
use diem_operators::Observation;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SamplingError};
use crate::guidance::dps::DpsTerm;
use crate::guidance::{
    DiffPir, DiffPirConfig, GuidanceStats, Measurement, Mmps, MmpsConfig, Pgdm, PgdmConfig, Tmpd, TmpdConfig,
};
use crate::rng::NoiseRng;
use crate::sampler::{Sampler, Silent, StepObserver, TimeGrid};
use crate::tds::{Tds, TdsConfig};

/// A posterior method with everything it needs but the prior and the observations: the settings of one
/// guidance wrapper, or DPS's step size. [`PosteriorMethod::resolve`](crate::PosteriorMethod::resolve) makes
/// one from the configuration's vocabulary; an [`MmpsConfig`] converts into one directly.
#[derive(Debug, Clone)]
pub enum GuidanceConfig {
    /// [`Mmps`].
    Mmps(MmpsConfig),
    /// [`Pgdm`].
    Pgdm(PgdmConfig),
    /// [`Tmpd`].
    Tmpd(TmpdConfig),
    /// [`DiffPir`].
    DiffPir(DiffPirConfig),
    /// [`Dps`](crate::Dps) with step size ζ.
    Dps {
        /// The step size ζ ≥ 0.
        zeta: f64,
    },
    /// [`Tds`], the twisted diffusion sampler (a particle sampler of its own, like DPS).
    Tds(TdsConfig),
}

impl From<MmpsConfig> for GuidanceConfig {
    fn from(config: MmpsConfig) -> Self {
        Self::Mmps(config)
    }
}

impl GuidanceConfig {
    /// The posterior of `prior` given `measurement`.
    ///
    /// # Errors
    /// The wrapper's constructor's errors ([`Mmps::new`], [`Pgdm::new`], [`Tmpd::new`], [`DiffPir::new`],
    /// [`Dps::new`](crate::Dps::new)).
    pub fn build<'a>(&self, prior: &'a dyn Denoiser, measurement: Measurement<'a>) -> Result<Posterior<'a>> {
        let inner = match self {
            Self::Mmps(c) => Built::Mmps(Mmps::from_measurement(prior, measurement, c.clone())?),
            Self::Pgdm(c) => Built::Pgdm(Pgdm::from_measurement(prior, measurement, *c)?),
            Self::Tmpd(c) => Built::Tmpd(Tmpd::from_measurement(prior, measurement, *c)?),
            Self::DiffPir(c) => Built::DiffPir(DiffPir::from_measurement(prior, measurement, *c)?),
            Self::Dps { zeta } => {
                Built::Dps { prior, term: DpsTerm::new(measurement.operator(), measurement.y(), *zeta)? }
            }
            Self::Tds(c) => Built::Tds(Tds::from_measurement(prior, measurement, *c)?),
        };
        Ok(Posterior { inner })
    }

    /// [`GuidanceConfig::build`] on an [`Observation`].
    ///
    /// # Errors
    /// As [`GuidanceConfig::build`].
    pub fn from_observation<'a>(
        &self,
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
    ) -> Result<Posterior<'a>> {
        self.build(prior, Measurement::from_observation(obs))
    }
}

/// A posterior built for one prior and one measurement (per-sample operators and noise): a guided denoiser,
/// or DPS. Sample it with [`Posterior::sample`]; read its costs with [`Posterior::stats`].
pub struct Posterior<'a> {
    inner: Built<'a>,
}

enum Built<'a> {
    Mmps(Mmps<'a>),
    Pgdm(Pgdm<'a>),
    Tmpd(Tmpd<'a>),
    DiffPir(DiffPir<'a>),
    Dps { prior: &'a dyn Denoiser, term: DpsTerm<'a> },
    Tds(Tds<'a>),
}

impl<'a> Posterior<'a> {
    /// The posterior denoiser `E[x | x_t, y]` that a sampler runs on; `None` for DPS, which guides the
    /// transition instead of the denoiser, and for TDS, which moves particles.
    pub fn denoiser(&self) -> Option<&dyn Denoiser> {
        match &self.inner {
            Built::Mmps(d) => Some(d),
            Built::Pgdm(d) => Some(d),
            Built::Tmpd(d) => Some(d),
            Built::DiffPir(d) => Some(d),
            Built::Dps { .. } | Built::Tds(_) => None,
        }
    }

    /// The TDS sampler, if this is TDS (its [`Tds::take_diagnostics`] has the last run's weights).
    pub fn tds(&self) -> Option<&Tds<'a>> {
        match &self.inner {
            Built::Tds(d) => Some(d),
            _ => None,
        }
    }

    /// The MMPS denoiser, if this is MMPS.
    pub fn mmps(&self) -> Option<&Mmps<'a>> {
        match &self.inner {
            Built::Mmps(d) => Some(d),
            _ => None,
        }
    }

    /// Forwards, VJPs, solver applications and safeguard events counted so far (for DPS: its steps).
    pub fn stats(&self) -> GuidanceStats {
        match &self.inner {
            Built::Mmps(d) => d.stats(),
            Built::Pgdm(d) => d.stats(),
            Built::Tmpd(d) => d.stats(),
            Built::DiffPir(d) => d.stats(),
            Built::Dps { term, .. } => term.stats.get(),
            Built::Tds(d) => d.stats(),
        }
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        match &self.inner {
            Built::Mmps(d) => d.reset_stats(),
            Built::Pgdm(d) => d.reset_stats(),
            Built::Tmpd(d) => d.reset_stats(),
            Built::DiffPir(d) => d.reset_stats(),
            Built::Dps { term, .. } => term.stats.reset(),
            Built::Tds(d) => d.reset_stats(),
        }
    }

    /// Posterior samples of shape `shape = [N, ..x_shape]` (`N` the measurement's batch) with `sampler`:
    /// [`Sampler::initial`] then [`Sampler::sample_from`] on the posterior denoiser, or DPS's steps on
    /// `sampler`'s schedule and grid (its transition rule is DPS's own). `observer` sees every step.
    ///
    /// # Errors
    /// As [`Sampler::sample`]; a guided step's errors (shapes, autograd, solver). [`SamplingError::Config`]
    /// (field `sampler`) for DPS on a sampler that does not host it ([`Sampler::hosts_dps`]: the ODE solvers
    /// Euler, Heun and DPM-Solver++(2M)).
    pub fn sample_observed(
        &self,
        sampler: &dyn Sampler,
        shape: &[i64],
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<Tensor> {
        let guided = |d: &dyn Denoiser, rng: &mut NoiseRng, observer: &mut dyn StepObserver| {
            let x = sampler.initial(d, shape, kind, device, rng)?;
            sampler.sample_from(d, &x, rng, observer)
        };
        match &self.inner {
            Built::Mmps(d) => guided(d, rng, observer),
            Built::Pgdm(d) => guided(d, rng, observer),
            Built::Tmpd(d) => guided(d, rng, observer),
            Built::DiffPir(d) => guided(d, rng, observer),
            Built::Dps { .. } if !sampler.hosts_dps() => Err(SamplingError::config(
                "sampler",
                format!(
                    "DPS is a sampler of its own (a DDPM step plus its gradient step) and cannot run as the \
                     deterministic ODE solver {:?}: use ddpm, ddim or pc with DPS",
                    sampler.name()
                ),
            )),
            Built::Dps { prior, term } => {
                let dps = DpsOn { base: sampler, term };
                let x = dps.initial(*prior, shape, kind, device, rng)?;
                dps.sample_from(*prior, &x, rng, observer)
            }
            // TDS's particles move on the sampler's schedule and grid; `shape` is implied by the measurement.
            Built::Tds(d) => d.sample_rows(sampler, kind, device, rng, observer),
        }
    }

    /// [`Posterior::sample_observed`] without an observer.
    ///
    /// # Errors
    /// As [`Posterior::sample_observed`].
    pub fn sample(
        &self,
        sampler: &dyn Sampler,
        shape: &[i64],
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        self.sample_observed(sampler, shape, kind, device, rng, &mut Silent)
    }
}

impl std::fmt::Debug for Posterior<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Built::Mmps(d) => d.fmt(f),
            Built::Pgdm(d) => d.fmt(f),
            Built::Tmpd(d) => d.fmt(f),
            Built::DiffPir(d) => d.fmt(f),
            Built::Dps { term, .. } => term.fmt(f),
            Built::Tds(d) => d.fmt(f),
        }
    }
}

/// DPS's step on another sampler's schedule and grid.
struct DpsOn<'s, 'a> {
    base: &'s dyn Sampler,
    term: &'s DpsTerm<'a>,
}

impl Sampler for DpsOn<'_, '_> {
    fn name(&self) -> &'static str {
        "dps"
    }

    fn schedule(&self) -> &dyn Schedule {
        self.base.schedule()
    }

    fn grid(&self) -> &TimeGrid {
        self.base.grid()
    }

    fn calls_per_step(&self) -> usize {
        1
    }

    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        self.term.step(self.base.schedule(), denoiser, x_t, t, s, rng)
    }
}

impl crate::PosteriorMethod {
    /// The posterior of `prior` given `measurement` for this method; `sigma_x` is Σ_x for `cov_x`
    /// ([`PosteriorMethod::resolve`](crate::PosteriorMethod::resolve) then [`GuidanceConfig::build`]).
    ///
    /// # Errors
    /// As [`PosteriorMethod::resolve`](crate::PosteriorMethod::resolve) and [`GuidanceConfig::build`].
    pub fn build<'a>(
        &self,
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        sigma_x: Option<&diem_linalg::Dplr>,
    ) -> Result<Posterior<'a>> {
        self.resolve(sigma_x)?.build(prior, measurement)
    }

    /// One posterior sample per observation of `measurement` with `sampler` (DPS: on its schedule and grid),
    /// in `options = (kind, device)` (tch's tensor options), and the method's costs: [`PosteriorMethod::build`](crate::PosteriorMethod::build)
    /// then [`Posterior::sample`].
    ///
    /// # Errors
    /// As [`PosteriorMethod::build`](crate::PosteriorMethod::build) and [`Posterior::sample`].
    pub fn sample(
        &self,
        prior: &dyn Denoiser,
        measurement: Measurement<'_>,
        sigma_x: Option<&diem_linalg::Dplr>,
        sampler: &dyn Sampler,
        (kind, device): (Kind, Device),
        rng: &mut NoiseRng,
    ) -> Result<(Tensor, GuidanceStats)> {
        let mut shape = vec![measurement.len()];
        shape.extend(measurement.operator().x_shape());
        let posterior = self.build(prior, measurement, sigma_x)?;
        let x = posterior.sample(sampler, &shape, kind, device, rng)?;
        Ok((x, posterior.stats()))
    }
}
