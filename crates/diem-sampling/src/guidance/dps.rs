//! DPS: diffusion posterior sampling, a gradient step after the unguided DDPM step (docs/method.md §5.3).

use diem_models::{Denoiser, Schedule};
use diem_operators::{LinearOperator, Observation};
use tch::{Kind, Tensor};

use super::measurement::{check_x, check_y};
use super::{forward_with_graph, GuidanceStats, StatsCell, Tape};
use crate::error::{Result, SamplingError};
use crate::rng::NoiseRng;
use crate::sampler::ddpm::ddpm_update;
use crate::sampler::{Sampler, TimeGrid};

/// DPS as a [`Sampler`] (docs/method.md §5.3): each step from `t` to `s`, per sample `b`,
///
/// ```text
/// x̂   = d(x_t, σ_t)                       (with graph)
/// r   = y − A x̂,   ℓ = ||r||₂             (Euclidean norm of each sample, NOT squared)
/// x_s' = DDPM step with x̂                 (docs/method.md §4.2, fresh noise)
/// x_s = x_s' − ζ ∇_{x_t} ℓ = x_s' + ζ Jᵀ Aᵀ r / ||r||₂
/// ```
///
/// The denoiser passed to [`Sampler::step`] is the *prior*. The norm is taken per sample (the DPS code takes it
/// over the whole batch, which would couple samples; docs/method.md §12.2). The final denoise at `σ(t_T)` is the plain
/// prior (σ_min = 10⁻³ in the default schedule). Cost: 1 forward and 1 VJP per step. Σ_y plays no role.
/// ζ = 0.5 in the benchmark code's FFHQ runs; the DPS default is 1.
///
/// # References
/// Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse Problems",
/// ICLR 2023, arXiv:2209.14687.
#[derive(Debug)]
pub struct Dps<'a> {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
    term: DpsTerm<'a>,
}

impl<'a> Dps<'a> {
    /// DPS on `grid` with step size `zeta = ζ` for the observations `y = A x + ε` (`operator = A`).
    ///
    /// # Errors
    /// [`SamplingError::Shape`] unless `y` is `[N, ..operator.y_shape()]` with `operator.batch() ∈ {1, N}`;
    /// [`SamplingError::Config`] unless `ζ` is finite and ≥ 0.
    pub fn new(
        schedule: impl Schedule + 'static,
        grid: TimeGrid,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        zeta: f64,
    ) -> Result<Self> {
        Ok(Self { schedule: Box::new(schedule), grid, term: DpsTerm::new(operator, y, zeta)? })
    }

    /// DPS conditioned on an [`Observation`] (its noise covariance is unused).
    ///
    /// # Errors
    /// As [`Dps::new`].
    pub fn from_observation(
        schedule: impl Schedule + 'static,
        grid: TimeGrid,
        obs: &'a Observation,
        zeta: f64,
    ) -> Result<Self> {
        Self::new(schedule, grid, obs.operator.as_ref(), &obs.y, zeta)
    }

    /// The step size ζ.
    pub fn zeta(&self) -> f64 {
        self.term.zeta
    }

    /// Costs counted so far (steps only).
    pub fn stats(&self) -> GuidanceStats {
        self.term.stats.get()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        self.term.stats.reset();
    }

    /// The guidance term `Jᵀ Aᵀ r / ||r||₂ = −∇_{x_t} ||y − A d(x_t)||₂` and the denoised `x̂` (both detached).
    ///
    /// # Errors
    /// [`SamplingError::Shape`] when `x_t` does not match the observations; [`SamplingError::Torch`] when the
    /// prior cannot be differentiated.
    pub fn guidance(&self, prior: &dyn Denoiser, x_t: &Tensor, sigma: &Tensor) -> Result<(Tensor, Tensor)> {
        self.term.guidance(prior, x_t, sigma)
    }
}

/// DPS's observation, step size and counters, apart from a schedule and a grid: [`Dps`] owns them, and
/// [`crate::Posterior`] runs the same step on the schedule and grid of any sampler.
#[derive(Debug)]
pub(crate) struct DpsTerm<'a> {
    operator: &'a dyn LinearOperator,
    y: Tensor,
    zeta: f64,
    pub(crate) stats: StatsCell,
}

impl<'a> DpsTerm<'a> {
    /// As [`Dps::new`].
    pub(crate) fn new(operator: &'a dyn LinearOperator, y: &Tensor, zeta: f64) -> Result<Self> {
        check_y(operator, y)?;
        if !(zeta.is_finite() && zeta >= 0.0) {
            return Err(SamplingError::config("Dps.zeta", format!("must be finite and ≥ 0, got {zeta}")));
        }
        Ok(Self { operator, y: y.detach(), zeta, stats: StatsCell::default() })
    }

    /// As [`Dps::guidance`].
    pub(crate) fn guidance(
        &self,
        prior: &dyn Denoiser,
        x_t: &Tensor,
        sigma: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        check_x("Dps::step", self.operator, self.y.size()[0], x_t)?;
        self.stats.update(|s| {
            s.calls += 1;
            s.forwards += 1;
        });
        tch::with_grad(|| {
            let (x, x_hat) = forward_with_graph(prior, x_t, sigma);
            let tape = Tape::new(&x_hat, &x, &self.stats);
            let x_hat_d = x_hat.detach();
            let r =
                self.y.to_kind(x_hat_d.kind()).to_device(x_hat_d.device()) - self.operator.apply(&x_hat_d);
            let n = r.size()[0];
            let mut norm_shape = vec![n];
            norm_shape.extend(std::iter::repeat_n(1, r.dim() - 1));
            let norm = r
                .reshape([n, -1])
                .to_kind(Kind::Double)
                .square()
                .sum_dim_intlist(1, false, Kind::Double)
                .sqrt()
                .clamp_min(f64::MIN_POSITIVE)
                .to_kind(r.kind())
                .reshape(norm_shape);
            let g = tape.vjp(&self.operator.adjoint(&(r / norm)), false);
            tape.check()?;
            Ok((g.detach(), x_hat_d))
        })
    }

    /// One DPS step from `t` to `s` under `schedule`: `x_s = DDPM(x_t, x̂) + ζ Jᵀ Aᵀ r / ||r||₂`.
    pub(crate) fn step(
        &self,
        schedule: &dyn Schedule,
        prior: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s) = (schedule.sigma_at(t), schedule.sigma_at(s));
        let sigma = crate::sampler::sigma_tensor(x_t, sigma_t);
        let (g, x_hat) = self.guidance(prior, x_t, &sigma)?;
        let eps = rng.normal_like(x_t);
        Ok(ddpm_update(x_t, &x_hat, sigma_t, sigma_s, &eps) + g * self.zeta)
    }
}

impl Sampler for Dps<'_> {
    fn name(&self) -> &'static str {
        "dps"
    }

    fn schedule(&self) -> &dyn Schedule {
        self.schedule.as_ref()
    }

    fn grid(&self) -> &TimeGrid {
        &self.grid
    }

    fn calls_per_step(&self) -> usize {
        1
    }

    /// `x_s = DDPM(x_t, x̂) + ζ Jᵀ Aᵀ r / ||r||₂` (see the type's docs); `denoiser` is the prior.
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        self.term.step(self.schedule.as_ref(), denoiser, x_t, t, s, rng)
    }
}
