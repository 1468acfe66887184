//! Probability-flow ODE solvers of EDM: Euler and Heun (docs/method.md §4.5).
//!
//! In VE (α = 1) the probability-flow ODE written in the noise level is (Karras et al. 2022, eq. 4 with
//! `s(t) = 1`, `σ(t)` our [`Schedule`]; docs/method.md §2 at η = 0):
//!
//! ```text
//! dx/dσ = z(x, σ) = (x − d(x, σ)) / σ
//! ```
//!
//! integrated from `σ(t_0)` down to `σ(t_T)` over the sampler's [`TimeGrid`]. Both samplers are deterministic:
//! the only randomness of a run is the initial draw `x_{t_0} = μ_x + σ(t_0) z` from the [`NoiseRng`]. EDM's
//! optional stochasticity (`S_churn`, Algorithm 2's noise injection) is not implemented: with
//! `S_churn = 0` Algorithm 2 is Algorithm 1, which is what [`Heun`] is.

use diem_models::{Denoiser, Schedule};
use tch::Tensor;

use super::{denoise_at, Sampler, TimeGrid};
use crate::error::Result;
use crate::rng::NoiseRng;

/// The ODE's slope `z = (x − d)/σ` at noise level `σ > 0` with `d = d(x, σ)` (Karras et al. 2022, Algorithm 1,
/// line 4: `d_i = (x_i − D_θ(x_i; t_i))/t_i`).
pub fn ode_slope(x: &Tensor, d: &Tensor, sigma: f64) -> Tensor {
    (x - d) / sigma
}

/// The explicit Euler step of the probability-flow ODE from `σ_t` to `σ_s` with `d = d(x_t, σ_t)`:
///
/// ```text
/// x_s = x_t + (σ_s − σ_t) (x_t − d)/σ_t
/// ```
///
/// which equals `d + (σ_s/σ_t)(x_t − d)`, the DDIM step with η = 0 ([`ddim_update`](super::ddim::ddim_update),
/// docs/method.md §4.3), up to rounding. At `σ_s = 0` it returns `d`.
pub fn euler_update(x_t: &Tensor, d: &Tensor, sigma_t: f64, sigma_s: f64) -> Tensor {
    x_t + ode_slope(x_t, d, sigma_t) * (sigma_s - sigma_t)
}

/// The Euler sampler of the probability-flow ODE (Karras et al. 2022, Algorithm 1 without the correction):
/// one denoiser call per step, `T + 1` in total with the final denoise (docs/method.md §4.1, §4.5).
///
/// Each step is [`euler_update`]. In VE this is exactly DDIM with η = 0 ([`Ddim`](crate::Ddim)): the two
/// agree to rounding (≈ 10⁻¹⁶ relative; a test checks 10⁻¹² in f64). It exists under its own name so that
/// configurations can ask for the EDM family by name, and as the first-order reference of [`Heun`] and
/// [`DpmPp2m`](crate::DpmPp2m). First order: its error at the end of the ODE falls like `1/T`.
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{GaussianDenoiser, VeSchedule};
/// use diem_sampling::{Euler, NoiseRng, Sampler, TimeGrid};
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(Tensor::zeros([2], (Kind::Double, Device::Cpu)),
///                                   Dplr::identity(2, Kind::Double, Device::Cpu))?;
/// let euler = Euler::new(VeSchedule::default(), TimeGrid::uniform(16)?);
/// let x = euler.sample(&prior, &[8, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0))?;
/// assert_eq!((x.size(), euler.denoiser_calls()), (vec![8, 2], 17));
/// # Ok(())
/// # }
/// ```
///
/// # References
/// Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
/// NeurIPS 2022, arXiv:2206.00364, §3 and Algorithm 1.
#[derive(Debug)]
pub struct Euler {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
}

impl Euler {
    /// Euler on `grid` under `schedule`.
    pub fn new(schedule: impl Schedule + 'static, grid: TimeGrid) -> Self {
        Self { schedule: Box::new(schedule), grid }
    }
}

impl Sampler for Euler {
    fn name(&self) -> &'static str {
        "euler"
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

    /// A deterministic ODE solver: DPS's stochastic step would replace its transition (see
    /// [`Sampler::hosts_dps`]).
    fn hosts_dps(&self) -> bool {
        false
    }

    /// [`euler_update`] with `d = d(x_t, σ_t)`; draws no noise.
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        _rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s) = (self.schedule.sigma_at(t), self.schedule.sigma_at(s));
        let d = denoise_at(denoiser, x_t, sigma_t)?;
        Ok(euler_update(x_t, &d, sigma_t, sigma_s))
    }
}

/// Heun's second-order sampler of the probability-flow ODE (Karras et al. 2022, Algorithm 1; Algorithm 2 with
/// `S_churn = 0`). Each step from `t` to `s`, with `z(x, σ) = (x − d(x, σ))/σ` ([`ode_slope`]):
///
/// ```text
/// z_t = z(x_t, σ_t)                              (call 1)
/// x'  = x_t + (σ_s − σ_t) z_t                    (Euler predictor, euler_update)
/// z_s = z(x', σ_s)                               (call 2)
/// x_s = x_t + (σ_s − σ_t) (z_t + z_s)/2          (trapezoid corrector)
/// ```
///
/// Two denoiser calls per step, `2T + 1` in total with the final denoise. EDM skips the corrector on a step
/// that ends at `σ_s = 0` (the slope is undefined there); diem's VE schedules end at `σ(0) = σ_min > 0`, so
/// every step, the last included, is corrected, and the final denoise at `σ_min` follows as for every sampler
/// (docs/method.md §4.1). Only a grid that does reach `σ_s = 0` (a custom [`Schedule`]) gets the plain Euler
/// step there, and [`Sampler::denoiser_calls`] counts one call fewer for it. Second order: its error at the end
/// of the ODE falls like `1/T²`, so it reaches DDIM's accuracy at far fewer network evaluations.
///
/// The stochastic variant (`S_churn > 0`, noise injected before each step) is not implemented.
///
/// # References
/// Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
/// NeurIPS 2022, arXiv:2206.00364, Algorithms 1–2.
#[derive(Debug)]
pub struct Heun {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
}

impl Heun {
    /// Heun on `grid` under `schedule`.
    pub fn new(schedule: impl Schedule + 'static, grid: TimeGrid) -> Self {
        Self { schedule: Box::new(schedule), grid }
    }
}

impl Sampler for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }

    fn schedule(&self) -> &dyn Schedule {
        self.schedule.as_ref()
    }

    fn grid(&self) -> &TimeGrid {
        &self.grid
    }

    /// 2: the predictor's and the corrector's denoiser calls.
    fn calls_per_step(&self) -> usize {
        2
    }

    /// `2T + 1`, less one when the grid ends at `σ = 0` (no corrector on that step).
    fn denoiser_calls(&self) -> usize {
        let skipped = usize::from(self.schedule.sigma_at(self.grid.end()) <= 0.0);
        self.grid.steps() * 2 + 1 - skipped
    }

    /// A deterministic ODE solver: DPS's stochastic step would replace its transition (see
    /// [`Sampler::hosts_dps`]).
    fn hosts_dps(&self) -> bool {
        false
    }

    /// The predictor and the trapezoid corrector (see the type's docs); draws no noise.
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        _rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s) = (self.schedule.sigma_at(t), self.schedule.sigma_at(s));
        let d = denoise_at(denoiser, x_t, sigma_t)?;
        let z_t = ode_slope(x_t, &d, sigma_t);
        let x_pred = (x_t + &z_t * (sigma_s - sigma_t)).detach();
        if sigma_s <= 0.0 {
            return Ok(x_pred);
        }
        let d_s = denoise_at(denoiser, &x_pred, sigma_s)?;
        let z_s = ode_slope(&x_pred, &d_s, sigma_s);
        Ok(x_t + (z_t + z_s) * (0.5 * (sigma_s - sigma_t)))
    }
}
