//! GDM / PiGDM in VE form (docs/method.md §5.4).

use tch::Tensor;

use super::guided::{Guidance, GuidanceCall, Guided};
use super::heuristic::CovHeuristic;
use super::measurement::Measurement;
use super::mmps::{MmpsConfig, MmpsGuidance};
use super::SolverConfig;
use crate::error::Result;

/// [`Pgdm`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PgdmConfig {
    /// The solve of `(Σ_y + r_t² A Aᵀ) v = y − A x̂` (default: GMRES, 5 iterations, as in the benchmark code).
    pub solver: SolverConfig,
}

impl Default for PgdmConfig {
    fn default() -> Self {
        Self { solver: SolverConfig::gmres(5) }
    }
}

/// The rule of [`Pgdm`]: pseudo-inverse guided diffusion (GDM / PiGDM) with the Σ_y-aware system, in VE units
/// (docs/method.md §5.4):
///
/// ```text
/// r_t² = σ_t² / (1 + σ_t²)                         (VP: 1 − ᾱ_t; the `ones` heuristic)
/// solve (Σ_y + r_t² A Aᵀ) v = y − A x̂              (no network in K)
/// return x̂ + σ_t² Jᵀ Aᵀ v                         (1 VJP)
/// ```
///
/// This is MMPS with [`CovHeuristic::Ones`], the VE analogue named by docs/method.md §5.4 (derived for diem): Tweedie's
/// `E[x | x_t, y] = x̂ + σ_t² ∇ log p(y | x_t)` with PiGDM's likelihood score. The benchmark code's VP sampler instead adds
/// `sqrt(ᾱ_s ᾱ_t) r_t² Jᵀ Aᵀ v` after the step (a RED-diff weight with no VE counterpart); that VP form is not
/// implemented. Cost: 1 forward, 1 VJP.
///
/// Building it fails as [`MmpsGuidance`]'s does with the same solver (a zero iteration count or a bad
/// tolerance).
///
/// # References
/// Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems", ICLR 2023.
#[derive(Clone, Debug)]
pub struct PgdmGuidance {
    config: PgdmConfig,
    /// MMPS with the `ones` heuristic and this solver.
    inner: MmpsGuidance,
}

/// The PiGDM posterior denoiser: [`PgdmGuidance`] (its equations and costs) in the [`Guided`] shell.
pub type Pgdm<'a> = Guided<'a, PgdmGuidance>;

impl Guidance for PgdmGuidance {
    type Config = PgdmConfig;

    const NAME: &'static str = "Pgdm";

    fn build(config: PgdmConfig, measurement: &Measurement<'_>) -> Result<Self> {
        let mmps = MmpsConfig::new(config.solver).with_heuristic(CovHeuristic::Ones);
        Ok(Self { config, inner: MmpsGuidance::build(mmps, measurement)? })
    }

    fn config(&self) -> &PgdmConfig {
        &self.config
    }

    /// The PiGDM estimate: MMPS's with the `ones` heuristic (see the type's docs).
    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.inner.estimate(call, x_t, sigma)
    }
}
