//! DiffPIR's proximal data-consistency step in VE form (docs/method.md §5.6).

use tch::Tensor;

use super::guided::{Guidance, GuidanceCall, Guided};
use super::measurement::Measurement;
use super::{sigma_sq_like, SolverConfig};
use crate::error::{Result, SamplingError};

/// [`DiffPir`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffPirConfig {
    /// The regularization weight λ (default 8, the benchmark code; azula uses 10).
    pub lambda: f64,
    /// The x-space proximal solve (default: GMRES, 5 iterations, the benchmark code).
    pub solver: SolverConfig,
}

impl Default for DiffPirConfig {
    fn default() -> Self {
        Self { lambda: 8.0, solver: SolverConfig::gmres(5) }
    }
}

/// The rule of [`DiffPir`]: DiffPIR's proximal step on the denoised mean, without any gradient through the
/// network (docs/method.md §5.6), in VE units (`ρ_t = σ_t²/λ`, since `(1 − ᾱ_t)/ᾱ_t = σ_VE²`):
///
/// ```text
/// x̂ = d_θ(x_t, σ_t)                                  (no graph)
/// solve (I + ρ_t Aᵀ Σ_y⁻¹ A) δ = ρ_t Aᵀ Σ_y⁻¹ (y − A x̂)
/// return x̂ + δ = argmin_x ½||y − A x||²_{Σ_y⁻¹} + ||x − x̂||²/(2ρ_t)
/// ```
///
/// With `Σ_y = σ_y² I` this is exactly the benchmark code's `(I + (ρ_t/σ_y²) AᵀA) δ = (ρ_t/σ_y²) Aᵀ(y − A x̂)`. The benchmark code
/// adds `c_t δ` after its shared η = 1 step, i.e. replaces x̂ by `x̂ + δ`; as a denoiser wrapper under
/// [`Ddpm`](crate::Ddpm) this is the same rule in VE. DiffPIR's own ζ is not used. Cost: 1 forward, 0 VJPs.
///
/// Building it fails with [`SamplingError::Config`] unless `λ > 0`, the solver has at least one iteration and
/// a valid tolerance, and every noise deviation is positive (`Σ_y⁻¹` appears in the system).
///
/// # References
/// Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration", CVPR 2023 workshops,
/// arXiv:2305.08995.
#[derive(Clone, Debug)]
pub struct DiffPirGuidance {
    config: DiffPirConfig,
}

/// The DiffPIR posterior denoiser: [`DiffPirGuidance`] (its equations and costs) in the [`Guided`] shell.
pub type DiffPir<'a> = Guided<'a, DiffPirGuidance>;

impl Guidance for DiffPirGuidance {
    type Config = DiffPirConfig;

    const NAME: &'static str = "DiffPir";

    fn build(config: DiffPirConfig, measurement: &Measurement<'_>) -> Result<Self> {
        if !(config.lambda.is_finite() && config.lambda > 0.0) {
            return Err(SamplingError::config(
                "DiffPirConfig.lambda",
                format!("must be finite and > 0, got {}", config.lambda),
            ));
        }
        config.solver.validate("DiffPirConfig.solver")?;
        measurement.require_positive_noise("DiffPir noise")?;
        Ok(Self { config })
    }

    fn config(&self) -> &DiffPirConfig {
        &self.config
    }

    /// The proximal estimate `x̂ + δ` (see the type's docs).
    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let x_hat = call.denoise(x_t, sigma);
        let measurement = call.measurement();
        let op = measurement.operator();
        let noise = measurement.noise();
        let rho = sigma_sq_like(sigma, &x_hat) / self.config.lambda;
        let r = measurement.y_like(&x_hat) - op.apply(&x_hat);
        let rhs = op.adjoint(&noise.solve(&r)) * &rho;
        let k = |d: &Tensor| d + op.adjoint(&noise.solve(&op.apply(d))) * &rho;
        let (delta, applications) = self.config.solver.solve(k, &rhs)?;
        call.count(|s| s.solver_applications += applications);
        Ok(x_hat + delta)
    }
}
