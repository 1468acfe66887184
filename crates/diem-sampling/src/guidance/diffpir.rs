//! DiffPIR's proximal data-consistency step in VE form (SPEC.md §5.6).

use diem_models::Denoiser;
use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::Tensor;

use super::measurement::Measurement;
use super::{sigma_sq_like, GuidanceStats, SolverConfig, StatsCell};
use crate::error::{Result, SamplingError};

/// [`DiffPir`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffPirConfig {
    /// The regularization weight λ (default 8, \[bench\]; \[azula\] uses 10).
    pub lambda: f64,
    /// The x-space proximal solve (default: GMRES, 5 iterations, \[bench\]).
    pub solver: SolverConfig,
}

impl Default for DiffPirConfig {
    fn default() -> Self {
        Self { lambda: 8.0, solver: SolverConfig::gmres(5) }
    }
}

/// DiffPIR's proximal step on the denoised mean, without any gradient through the network (SPEC.md §5.6), in VE
/// units (`ρ_t = σ_t²/λ`, since `(1 − ᾱ_t)/ᾱ_t = σ_VE²`):
///
/// ```text
/// x̂ = d_θ(x_t, σ_t)                                  (no graph)
/// solve (I + ρ_t Aᵀ Σ_y⁻¹ A) δ = ρ_t Aᵀ Σ_y⁻¹ (y − A x̂)
/// return x̂ + δ = argmin_x ½||y − A x||²_{Σ_y⁻¹} + ||x − x̂||²/(2ρ_t)
/// ```
///
/// With `Σ_y = σ_y² I` this is exactly \[bench\]'s `(I + (ρ_t/σ_y²) AᵀA) δ = (ρ_t/σ_y²) Aᵀ(y − A x̂)`. \[bench\]
/// adds `c_t δ` after its shared η = 1 step, i.e. replaces x̂ by `x̂ + δ`; as a denoiser wrapper under
/// [`Ddpm`](crate::Ddpm) this is the same rule in VE. DiffPIR's own ζ is not used. Cost: 1 forward, 0 VJPs.
///
/// # References
/// Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration", CVPR 2023 workshops,
/// arXiv:2305.08995.
pub struct DiffPir<'a> {
    prior: &'a dyn Denoiser,
    measurement: Measurement<'a>,
    config: DiffPirConfig,
    stats: StatsCell,
}

impl<'a> DiffPir<'a> {
    /// DiffPIR for `prior` and `y = A x + ε`, `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Measurement::new`]; [`SamplingError::Config`] unless `λ > 0`, the solver has at least one iteration,
    /// and every noise deviation is positive (`Σ_y⁻¹` appears in the system).
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: DiffPirConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// DiffPIR conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`DiffPir::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: DiffPirConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// DiffPIR conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// As [`DiffPir::new`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: DiffPirConfig,
    ) -> Result<Self> {
        if !(config.lambda.is_finite() && config.lambda > 0.0) {
            return Err(SamplingError::config(
                "DiffPirConfig.lambda",
                format!("must be finite and > 0, got {}", config.lambda),
            ));
        }
        config.solver.validate("DiffPirConfig.solver")?;
        measurement.require_positive_noise("DiffPir noise")?;
        Ok(Self { prior, measurement, config, stats: StatsCell::default() })
    }

    /// Costs counted so far.
    pub fn stats(&self) -> GuidanceStats {
        self.stats.get()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// The proximal estimate `x̂ + δ` (see the type's docs). The result is detached.
    ///
    /// # Errors
    /// [`SamplingError::Shape`] when `x_t` does not match the observations; [`SamplingError::Linalg`] when the
    /// solve fails.
    pub fn try_denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.measurement.check_input("DiffPir::denoise", x_t)?;
        self.stats.update(|s| {
            s.calls += 1;
            s.forwards += 1;
        });
        let _guard = tch::no_grad_guard();
        let x_hat = self.prior.denoise(&x_t.detach(), sigma).detach();
        let op = self.measurement.operator();
        let noise = self.measurement.noise();
        let rho = sigma_sq_like(sigma, &x_hat) / self.config.lambda;
        let r = self.measurement.y_like(&x_hat) - op.apply(&x_hat);
        let rhs = op.adjoint(&noise.solve(&r)) * &rho;
        let k = |d: &Tensor| d + op.adjoint(&noise.solve(&op.apply(d))) * &rho;
        let (delta, applications) = self.config.solver.solve(k, &rhs)?;
        self.stats.update(|s| s.solver_applications += applications);
        Ok(x_hat + delta)
    }
}

impl Denoiser for DiffPir<'_> {
    /// [`DiffPir::try_denoise`].
    ///
    /// # Panics
    /// When [`DiffPir::try_denoise`] fails.
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("DiffPir: {e}"))
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.prior.prior_mean()
    }
}

impl std::fmt::Debug for DiffPir<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffPir")
            .field("measurement", &self.measurement)
            .field("config", &self.config)
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}
