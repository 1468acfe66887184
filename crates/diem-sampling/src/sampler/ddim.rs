//! DDIM, the deterministic η = 0 sampler, with the optional η interpolation (docs/method.md §4.3).

use diem_models::{Denoiser, Schedule};
use tch::Tensor;

use super::{denoise_at, Sampler, TimeGrid};
use crate::error::{Result, SamplingError};
use crate::rng::NoiseRng;

/// The DDIM update from `t` to `s < t` with `d = d(x_t, σ_t)` (docs/method.md §4.3):
///
/// ```text
/// x_s = x_t − (1 − σ_s/σ_t)(x_t − d) = d + (σ_s/σ_t)(x_t − d)
/// ```
///
/// which in VE is the explicit Euler step of the probability-flow ODE `dx/dσ = (x − d)/σ`.
pub fn ddim_update(x_t: &Tensor, d: &Tensor, sigma_t: f64, sigma_s: f64) -> Tensor {
    d + (x_t - d) * (sigma_s / sigma_t)
}

/// The DDIM sampler: one denoiser call per step, `T + 1` in total (docs/method.md §4.1, §4.3).
///
/// With `eta > 0` it uses the interpolation of docs/method.md §4.3 (azula):
/// `τ_η = clip(η (1 − σ_s²/σ_t²), 0, 1)`, `x_s = d + (σ_s/σ_t) √(1 − τ_η) (x_t − d) + σ_s √τ_η ε`, which is DDPM
/// at η = 1. The default η = 0 draws no noise after the initial value.
///
/// # References
/// Song, Meng, Ermon, "Denoising Diffusion Implicit Models", 2021, arXiv:2010.02502; VE form of the authors' code.
#[derive(Debug)]
pub struct Ddim {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
    eta: f64,
}

impl Ddim {
    /// Deterministic DDIM (η = 0) on `grid` under `schedule`.
    pub fn new(schedule: impl Schedule + 'static, grid: TimeGrid) -> Self {
        Self { schedule: Box::new(schedule), grid, eta: 0.0 }
    }

    /// Sets η (docs/method.md §4.3).
    ///
    /// # Errors
    /// [`SamplingError::Config`] unless `η` is finite and ≥ 0.
    pub fn with_eta(mut self, eta: f64) -> Result<Self> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(SamplingError::config("Ddim.eta", format!("must be finite and ≥ 0, got {eta}")));
        }
        self.eta = eta;
        Ok(self)
    }

    /// η.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
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

    /// [`ddim_update`] (η = 0) or the η-interpolation with fresh noise.
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s) = (self.schedule.sigma_at(t), self.schedule.sigma_at(s));
        let d = denoise_at(denoiser, x_t, sigma_t)?;
        if self.eta == 0.0 {
            return Ok(ddim_update(x_t, &d, sigma_t, sigma_s));
        }
        let tau = (self.eta * (1.0 - (sigma_s * sigma_s) / (sigma_t * sigma_t))).clamp(0.0, 1.0);
        let eps = rng.normal_like(x_t);
        Ok(&d + (x_t - &d) * ((sigma_s / sigma_t) * (1.0 - tau).sqrt()) + eps * (sigma_s * tau.sqrt()))
    }
}
