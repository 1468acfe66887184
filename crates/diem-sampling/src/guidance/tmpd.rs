//! TMPD with the row-sum covariance approximation (docs/method.md §5.5).

use tch::Tensor;

use super::guided::{Guidance, GuidanceCall, Guided};
use super::measurement::Measurement;
use super::{sigma_sq_like, SolverConfig, Tape};
use crate::error::Result;

/// [`Tmpd`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TmpdConfig {
    /// The solve of `(Σ_y + A diag(d) Aᵀ) v = y − A x̂` (default: GMRES, 5 iterations, as in the benchmark code).
    pub solver: SolverConfig,
}

impl Default for TmpdConfig {
    fn default() -> Self {
        Self { solver: SolverConfig::gmres(5) }
    }
}

/// The rule of [`Tmpd`]: Tweedie moment projected diffusion with the row-sum approximation `V ≈ diag(V 1)`,
/// the benchmark code's form, in VE units (`γ_t = σ_t²`; docs/method.md §5.5):
///
/// ```text
/// d = σ_t² Jᵀ 1                                   (1 VJP, all-ones cotangent: the covariance's row sums)
/// solve (Σ_y + A diag(d) Aᵀ) v = y − A x̂          (no network in K)
/// return x̂ + σ_t² Jᵀ Aᵀ v                        (1 VJP)
/// ```
///
/// The benchmark code adds `c_t Δ` after its VP step, i.e. replaces x̂ by `x̂ + Δ`; as a denoiser wrapper under
/// [`Ddpm`](crate::Ddpm) this is the same rule in VE. Cost: 1 forward, 2 VJPs (docs/method.md §5.8).
///
/// Building it fails with [`SamplingError::Config`](crate::SamplingError::Config) for a zero iteration count or
/// a bad tolerance.
///
/// # References
/// Boys et al., "Tweedie Moment Projected Diffusions for Inverse Problems", 2023, arXiv:2310.06721.
#[derive(Clone, Debug)]
pub struct TmpdGuidance {
    config: TmpdConfig,
}

/// The TMPD posterior denoiser: [`TmpdGuidance`] (its equations and costs) in the [`Guided`] shell.
pub type Tmpd<'a> = Guided<'a, TmpdGuidance>;

impl Guidance for TmpdGuidance {
    type Config = TmpdConfig;

    const NAME: &'static str = "Tmpd";

    fn build(config: TmpdConfig, _measurement: &Measurement<'_>) -> Result<Self> {
        config.solver.validate("TmpdConfig.solver")?;
        Ok(Self { config })
    }

    fn config(&self) -> &TmpdConfig {
        &self.config
    }

    /// The TMPD estimate (see the type's docs).
    fn estimate(&self, call: &GuidanceCall<'_>, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        tch::with_grad(|| {
            let (x, x_hat) = call.forward_with_graph(x_t, sigma);
            let tape = Tape::new(&x_hat, &x, call.stats);
            let measurement = call.measurement();
            let op = measurement.operator();
            let noise = measurement.noise();
            let sigma_sq = sigma_sq_like(sigma, &x);
            let x_hat_d = x_hat.detach();
            let rows = tape.vjp(&x_hat_d.ones_like(), true) * &sigma_sq;
            tape.check()?;
            let r = measurement.y_like(&x_hat_d) - op.apply(&x_hat_d);
            let k = |v: &Tensor| noise.mul(v) + op.apply(&(&rows * op.adjoint(v)));
            let (v, applications) = self.config.solver.solve(k, &r)?;
            call.count(|s| s.solver_applications += applications);
            let delta = tape.vjp(&op.adjoint(&v), false) * &sigma_sq;
            tape.check()?;
            Ok((x_hat_d + delta).detach())
        })
    }
}
