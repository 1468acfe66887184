//! TMPD with the row-sum covariance approximation (SPEC.md §5.5).

use diem_models::Denoiser;
use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::Tensor;

use super::measurement::Measurement;
use super::{forward_with_graph, sigma_sq_like, GuidanceStats, SolverConfig, StatsCell, Tape};
use crate::error::Result;

/// [`Tmpd`]'s settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TmpdConfig {
    /// The solve of `(Σ_y + A diag(d) Aᵀ) v = y − A x̂` (default: GMRES, 5 iterations, as in \[bench\]).
    pub solver: SolverConfig,
}

impl Default for TmpdConfig {
    fn default() -> Self {
        Self { solver: SolverConfig::gmres(5) }
    }
}

/// Tweedie moment projected diffusion with the row-sum approximation `V ≈ diag(V 1)`, \[bench\] form, in VE units
/// (`γ_t = σ_t²`; SPEC.md §5.5):
///
/// ```text
/// d = σ_t² Jᵀ 1                                   (1 VJP, all-ones cotangent: the covariance's row sums)
/// solve (Σ_y + A diag(d) Aᵀ) v = y − A x̂          (no network in K)
/// return x̂ + σ_t² Jᵀ Aᵀ v                        (1 VJP)
/// ```
///
/// \[bench\] adds `c_t Δ` after its VP step, i.e. replaces x̂ by `x̂ + Δ`; as a denoiser wrapper under
/// [`Ddpm`](crate::Ddpm) this is the same rule in VE. Cost: 1 forward, 2 VJPs (SPEC.md §5.8).
///
/// # References
/// Boys et al., "Tweedie Moment Projected Diffusions for Inverse Problems", 2023, arXiv:2310.06721.
pub struct Tmpd<'a> {
    prior: &'a dyn Denoiser,
    measurement: Measurement<'a>,
    config: TmpdConfig,
    stats: StatsCell,
}

impl<'a> Tmpd<'a> {
    /// TMPD for `prior` and `y = A x + ε`, `ε ~ N(0, noise)`.
    ///
    /// # Errors
    /// As [`Measurement::new`]; a zero iteration count or a bad tolerance.
    pub fn new(
        prior: &'a dyn Denoiser,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        config: TmpdConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::new(operator, y, noise)?, config)
    }

    /// TMPD conditioned on an [`Observation`].
    ///
    /// # Errors
    /// As [`Tmpd::new`].
    pub fn from_observation(
        prior: &'a dyn Denoiser,
        obs: &'a Observation,
        config: TmpdConfig,
    ) -> Result<Self> {
        Self::from_measurement(prior, Measurement::from_observation(obs), config)
    }

    /// TMPD conditioned on a [`Measurement`].
    ///
    /// # Errors
    /// As [`Tmpd::new`].
    pub fn from_measurement(
        prior: &'a dyn Denoiser,
        measurement: Measurement<'a>,
        config: TmpdConfig,
    ) -> Result<Self> {
        config.solver.validate("TmpdConfig.solver")?;
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

    /// The posterior mean estimate (see the type's docs). The result is detached.
    ///
    /// # Errors
    /// As [`Mmps::try_denoise`](crate::Mmps::try_denoise).
    pub fn try_denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.measurement.check_input("Tmpd::denoise", x_t)?;
        self.stats.update(|s| {
            s.calls += 1;
            s.forwards += 1;
        });
        tch::with_grad(|| {
            let (x, x_hat) = forward_with_graph(self.prior, x_t, sigma);
            let tape = Tape::new(&x_hat, &x, &self.stats);
            let op = self.measurement.operator();
            let noise = self.measurement.noise();
            let sigma_sq = sigma_sq_like(sigma, &x);
            let x_hat_d = x_hat.detach();
            let rows = tape.vjp(&x_hat_d.ones_like(), true) * &sigma_sq;
            tape.check()?;
            let r = self.measurement.y_like(&x_hat_d) - op.apply(&x_hat_d);
            let k = |v: &Tensor| noise.mul(v) + op.apply(&(&rows * op.adjoint(v)));
            let (v, applications) = self.config.solver.solve(k, &r)?;
            self.stats.update(|s| s.solver_applications += applications);
            let delta = tape.vjp(&op.adjoint(&v), false) * &sigma_sq;
            tape.check()?;
            Ok((x_hat_d + delta).detach())
        })
    }
}

impl Denoiser for Tmpd<'_> {
    /// [`Tmpd::try_denoise`].
    ///
    /// # Panics
    /// When [`Tmpd::try_denoise`] fails.
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("Tmpd: {e}"))
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.prior.prior_mean()
    }
}

impl std::fmt::Debug for Tmpd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tmpd")
            .field("measurement", &self.measurement)
            .field("config", &self.config)
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}
