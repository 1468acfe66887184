//! Samplers of the reverse VE process (docs/method.md §4): [`Ddpm`](crate::Ddpm), [`Ddim`](crate::Ddim), [`PredictorCorrector`](crate::PredictorCorrector),
//! and the probability-flow ODE solvers [`Euler`](crate::Euler), [`Heun`](crate::Heun) and
//! [`DpmPp2m`](crate::DpmPp2m) (docs/method.md §4.5).
//!
//! Every sampler shares the time grid, the initial value and the final denoise of docs/method.md §4.1:
//!
//! ```text
//! x_{t_0} = μ_x + σ(t_0) z,  z ~ N(0, I)       (μ_x = denoiser.prior_mean(), or 0)
//! x_{t_{k+1}} = step(x_{t_k}, t_k, t_{k+1})    k = 0..T−1
//! return d(x_{t_T}, σ(t_T))                    (one extra call: T·calls_per_step + 1 calls in total)
//! ```
//!
//! A sampler sees the prior (or posterior) only through [`Denoiser::denoise`]. The loop runs under
//! `tch::no_grad`, every state is detached after each step, and posterior denoisers open their own gradient
//! scope inside `denoise` (docs/method.md §12.2 "Graph lifetime"), so memory is flat in the number of steps.

pub mod ddim;
pub mod ddpm;
pub mod dpmpp;
pub mod grid;
pub mod ode;
pub mod pc;

use diem_models::{Denoiser, Schedule};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SamplingError};
use crate::rng::NoiseRng;

pub use grid::TimeGrid;

/// What a [`StepObserver`] learns after each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// The step just finished, `0..steps`.
    pub index: usize,
    /// The number of steps `T`.
    pub steps: usize,
    /// The step's start time `t_k`.
    pub t: f64,
    /// The step's end time `t_{k+1}`.
    pub s: f64,
    /// `σ(t_k)`.
    pub sigma_t: f64,
    /// `σ(t_{k+1})`.
    pub sigma_s: f64,
}

/// Receives the state after every step (progress bars, traces). Closures `FnMut(&StepInfo, &Tensor)` are
/// observers; [`Silent`] ignores everything.
pub trait StepObserver {
    /// Called after step `info.index` with the new state `x_s` (detached, never requires grad).
    fn on_step(&mut self, info: &StepInfo, x: &Tensor);
}

impl<F: FnMut(&StepInfo, &Tensor)> StepObserver for F {
    fn on_step(&mut self, info: &StepInfo, x: &Tensor) {
        self(info, x)
    }
}

/// The observer that ignores every step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl StepObserver for Silent {
    fn on_step(&mut self, _info: &StepInfo, _x: &Tensor) {}
}

/// A reverse-diffusion sampler over any [`Denoiser`] (docs/method.md §4).
///
/// Implementors provide [`Sampler::step`]; the provided methods build the initial value and run the loop with
/// the final denoise. The trait is object safe (`&dyn Sampler`).
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{GaussianDenoiser, VeSchedule};
/// use diem_sampling::{Ddim, NoiseRng, Sampler, TimeGrid};
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(
///     Tensor::from_slice(&[1.0f64, -1.0]),
///     Dplr::diagonal(Tensor::from_slice(&[0.5f64, 2.0]))?,
/// )?;
/// let sampler = Ddim::new(VeSchedule::default(), TimeGrid::uniform(64)?);
/// let x = sampler.sample(&prior, &[256, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0))?;
/// assert_eq!(x.size(), vec![256, 2]);
/// assert!(!x.requires_grad());
/// # Ok(())
/// # }
/// ```
pub trait Sampler {
    /// A short name (`"ddpm"`, `"ddim"`, `"pc"`, `"dps"`).
    fn name(&self) -> &'static str;

    /// The noise schedule `t ↦ σ(t)`.
    fn schedule(&self) -> &dyn Schedule;

    /// The time grid.
    fn grid(&self) -> &TimeGrid;

    /// Denoiser calls made by one [`Sampler::step`] (1 for DDPM/DDIM, `1 + C` for PC).
    fn calls_per_step(&self) -> usize;

    /// One reverse transition `x_t → x_s`, `s < t`. `x_t` does not require grad and the result must not either.
    ///
    /// # Errors
    /// When the denoiser's output does not have `x_t`'s shape, or a guided step fails (autograd, solver).
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> Result<Tensor>;

    /// Whether DPS may run on this sampler's schedule and grid (see [`crate::Posterior::sample`]): DPS is a
    /// sampler of its own and replaces the transition by its DDPM step plus its gradient step. `true` by
    /// default (DDPM, DDIM, PC); `false` for the deterministic probability-flow ODE solvers
    /// ([`Euler`](crate::Euler), [`Heun`](crate::Heun), [`DpmPp2m`](crate::DpmPp2m)), whose point, a
    /// deterministic higher-order integration in few steps, DPS would silently drop; [`crate::Posterior`] then
    /// returns a [`SamplingError::Config`] naming `sampler`.
    fn hosts_dps(&self) -> bool {
        true
    }

    /// The total number of denoiser calls of one run: `T · calls_per_step + 1` (the final denoise, docs/method.md §4.1).
    fn denoiser_calls(&self) -> usize {
        self.grid().steps() * self.calls_per_step() + 1
    }

    /// The initial value `x_{t_0} = μ_x + σ(t_0) z` for a batch of the given shape `[N, ...]` (docs/method.md §4.1,
    /// §12.2 "Starting mean"), with μ_x from [`Denoiser::prior_mean`] (0 when absent).
    ///
    /// # Errors
    /// [`SamplingError::Shape`] when `shape` has no batch axis or the prior mean does not have the per-sample
    /// number of entries.
    fn initial(
        &self,
        denoiser: &dyn Denoiser,
        shape: &[i64],
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let z = rng.normal(shape, kind, device);
        start_from_noise(denoiser, self.schedule().sigma_at(self.grid().start()), &z)
    }

    /// Runs the loop from a given `x_init` (`[N, ...]`, e.g. from [`Sampler::initial`] or a custom draw), calls
    /// `observer` after each step, and ends with the final denoise at `σ(t_T)`. Returns a detached tensor.
    ///
    /// # Errors
    /// As [`Sampler::step`].
    fn sample_from(
        &self,
        denoiser: &dyn Denoiser,
        x_init: &Tensor,
        rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let schedule = self.schedule();
        let steps = self.grid().steps();
        let mut x = x_init.detach();
        for (index, (t, s)) in self.grid().pairs().enumerate() {
            x = self.step(denoiser, &x, t, s, rng)?.detach();
            let info =
                StepInfo { index, steps, t, s, sigma_t: schedule.sigma_at(t), sigma_s: schedule.sigma_at(s) };
            observer.on_step(&info, &x);
        }
        Ok(denoise_at(denoiser, &x, schedule.sigma_at(self.grid().end()))?.detach())
    }

    /// [`Sampler::initial`] followed by [`Sampler::sample_from`] without an observer.
    ///
    /// # Errors
    /// As [`Sampler::initial`] and [`Sampler::step`].
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        shape: &[i64],
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let x = self.initial(denoiser, shape, kind, device, rng)?;
        self.sample_from(denoiser, &x, rng, &mut Silent)
    }
}

/// `μ_x + σ z` for standard normals `z : [N, ...]` (docs/method.md §4.1), with `μ_x` from the denoiser's prior mean
/// (reshaped to the per-sample shape; 0 when absent).
///
/// # Errors
/// [`SamplingError::Shape`] when `z` has no batch axis or the prior mean has the wrong number of entries.
pub fn start_from_noise(denoiser: &dyn Denoiser, sigma: f64, z: &Tensor) -> Result<Tensor> {
    let shape = z.size();
    if shape.is_empty() {
        return Err(SamplingError::shape("Sampler::initial", "shape", "[N, ...]", &shape));
    }
    let per: i64 = shape[1..].iter().product();
    let x = z.detach() * sigma;
    match denoiser.prior_mean() {
        None => Ok(x),
        Some(mean) => {
            if mean.numel() as i64 != per {
                return Err(SamplingError::shape(
                    "Sampler::initial",
                    "prior mean",
                    format!("{per} entries (the per-sample shape {:?})", &shape[1..]),
                    &mean.size(),
                ));
            }
            let mean = mean.detach().to_kind(x.kind()).to_device(x.device()).reshape(&shape[1..]);
            Ok(x + mean.unsqueeze(0))
        }
    }
}

/// `d(x, σ)` with the shared noise level as a 0-d tensor (see [`sigma_tensor`]), checking the output shape.
///
/// # Errors
/// [`SamplingError::Shape`] when the denoiser's output does not have `x`'s shape.
pub fn denoise_at(denoiser: &dyn Denoiser, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let out = denoiser.denoise(x, &sigma_tensor(x, sigma));
    if out.size() != x.size() {
        return Err(SamplingError::shape(
            "Denoiser::denoise",
            "output",
            format!("{:?} (the input's shape)", x.size()),
            &out.size(),
        ));
    }
    Ok(out)
}

/// The noise level `σ` shared by the batch, as a 0-d tensor in `x`'s kind and device. The [`Denoiser`] contract
/// accepts `[]` or `[N]`; the shared form lets closed-form denoisers (e.g. the Gaussian one) factor once per
/// call instead of once per sample.
pub fn sigma_tensor(x: &Tensor, sigma: f64) -> Tensor {
    Tensor::from(sigma).to_kind(x.kind()).to_device(x.device())
}
