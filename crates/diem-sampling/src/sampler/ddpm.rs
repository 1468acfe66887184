//! DDPM, the η = 1 ancestral sampler (docs/method.md §4.2).

use diem_models::{Denoiser, Schedule};
use tch::Tensor;

use super::{denoise_at, Sampler, TimeGrid};
use crate::error::Result;
use crate::rng::NoiseRng;

/// The DDPM update from `t` to `s < t` with `d = d(x_t, σ_t)` (docs/method.md §4.2):
///
/// ```text
/// τ   = 1 − σ_s² / σ_t²
/// x_s = x_t − τ (x_t − d) + σ_s √τ ε,   ε ~ N(0, I)
/// ```
///
/// the exact Gaussian bridge `q(x_s | x_t, x = d)`: mean `d + (σ_s²/σ_t²)(x_t − d)`, variance `σ_s² τ`.
pub fn ddpm_update(x_t: &Tensor, d: &Tensor, sigma_t: f64, sigma_s: f64, eps: &Tensor) -> Tensor {
    let tau = 1.0 - (sigma_s * sigma_s) / (sigma_t * sigma_t);
    x_t - (x_t - d) * tau + eps * (sigma_s * tau.max(0.0).sqrt())
}

/// The DDPM sampler (η = 1): one denoiser call per step, `T + 1` in total (docs/method.md §4.1–4.2).
///
/// # References
/// Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models", 2020, arXiv:2006.11239; VE form of the authors' code.
#[derive(Debug)]
pub struct Ddpm {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
}

impl Ddpm {
    /// DDPM on `grid` under `schedule`.
    pub fn new(schedule: impl Schedule + 'static, grid: TimeGrid) -> Self {
        Self { schedule: Box::new(schedule), grid }
    }
}

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
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

    /// [`ddpm_update`] with `d = d(x_t, σ_t)` and fresh noise.
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
        let eps = rng.normal_like(x_t);
        Ok(ddpm_update(x_t, &d, sigma_t, sigma_s, &eps))
    }
}
