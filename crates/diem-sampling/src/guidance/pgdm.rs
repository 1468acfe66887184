//! GDM / PiGDM in VE form (SPEC.md §5.4).

use diem_models::Denoiser;
use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::Tensor;

use super::heuristic::CovHeuristic;
use super::measurement::Measurement;
use super::mmps::{Mmps, MmpsConfig};
use super::{GuidanceStats, SolverConfig};
use crate::error::Result;

/// [`Pgdm`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PgdmConfig {
    /// The solve of `(Σ_y + r_t² A Aᵀ) v = y − A x̂` (default: GMRES, 5 iterations, as in \[bench\]).
    pub solver: SolverConfig,
}

impl Default for PgdmConfig {
    fn default() -> Self {
        Self { solver: SolverConfig::gmres(5) }
    }
}

/// Pseudo-inverse guided diffusion (GDM / PiGDM) with the Σ_y-aware system, in VE units (SPEC.md §5.4):
///
/// ```text
/// r_t² = σ_t² / (1 + σ_t²)                         (VP: 1 − ᾱ_t; the `ones` heuristic)
/// solve (Σ_y + r_t² A Aᵀ) v = y − A x̂              (no network in K)
/// return x̂ + σ_t² Jᵀ Aᵀ v                         (1 VJP)
/// ```
///
/// This is MMPS with [`CovHeuristic::Ones`], the VE analogue named by SPEC.md §5.4 \[derived\]: Tweedie's
/// `E[x | x_t, y] = x̂ + σ_t² ∇ log p(y | x_t)` with PiGDM's likelihood score. \[bench\]'s VP sampler instead adds
/// `sqrt(ᾱ_s ᾱ_t) r_t² Jᵀ Aᵀ v` after the step (a RED-diff weight with no VE counterpart); that VP form is not
/// implemented. Cost: 1 forward, 1 VJP.
///
/// # References
/// Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems", ICLR 2023.
#[derive(Debug)]
pub struct Pgdm<'a> {
    inner: Mmps<'a>,
}

impl<'a> Pgdm<'a> {
    /// PiGDM for `prior` and `y = A x + ε`, `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Mmps::new`].
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: PgdmConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// PiGDM conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`Mmps::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: PgdmConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// PiGDM conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// As [`Mmps::new`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: PgdmConfig,
    ) -> Result<Self> {
        let mmps = MmpsConfig::new(config.solver).with_heuristic(CovHeuristic::Ones);
        Ok(Self { inner: Mmps::from_measurement(prior, measurement, mmps)? })
    }

    /// Costs counted so far.
    pub fn stats(&self) -> GuidanceStats {
        self.inner.stats()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        self.inner.reset_stats();
    }

    /// The posterior mean estimate (see the type's docs). The result is detached.
    ///
    /// # Errors
    /// As [`Mmps::try_denoise`].
    pub fn try_denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.inner.try_denoise(x_t, sigma)
    }
}

impl Denoiser for Pgdm<'_> {
    /// [`Pgdm::try_denoise`].
    ///
    /// # Panics
    /// When [`Pgdm::try_denoise`] fails.
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("Pgdm: {e}"))
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.inner.prior_mean()
    }
}
