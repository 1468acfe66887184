//! DPM-Solver++(2M), the second-order multistep solver of the probability-flow ODE in data prediction
//! (docs/method.md §4.5).

use diem_models::{Denoiser, Schedule};
use tch::Tensor;

use super::{denoise_at, Sampler, StepInfo, StepObserver, TimeGrid};
use crate::error::{Result, SamplingError};
use crate::rng::NoiseRng;

/// The DPM-Solver++(2M) update from `σ_t` to `σ_s < σ_t` with `d_t = d(x_t, σ_t)` and, optionally, the previous
/// step's estimate `d_prev = d(x_prev, σ_prev)` (Lu et al. 2022, Algorithm 2, VE form α = 1):
///
/// ```text
/// λ = −ln σ,   h = λ_s − λ_t = ln(σ_t/σ_s),   h_prev = λ_t − λ_prev = ln(σ_prev/σ_t),   r = h_prev / h
/// D   = (1 + 1/(2r)) d_t − 1/(2r) d_prev      (D = d_t on the first step, without d_prev)
/// x_s = (σ_s/σ_t) x_t + (1 − σ_s/σ_t) D       ((1 − σ_s/σ_t) = 1 − e^{−h})
/// ```
///
/// Without `d_prev` (and whenever `h_prev ≤ 0` or `σ_s = 0`, where `r` is not a usable ratio) this is the
/// first-order step `d_t + (σ_s/σ_t)(x_t − d_t)`, i.e. DDIM / Euler; at `σ_s = 0` it returns `d_t`, as the
/// reference implementations do.
pub fn dpmpp2m_update(
    x_t: &Tensor,
    d_t: &Tensor,
    previous: Option<(&Tensor, f64)>,
    sigma_t: f64,
    sigma_s: f64,
) -> Tensor {
    let ratio = sigma_s / sigma_t;
    let d = match previous {
        Some((d_prev, sigma_prev)) if sigma_s > 0.0 && sigma_prev > sigma_t => {
            let h = (sigma_t / sigma_s).ln();
            let r = (sigma_prev / sigma_t).ln() / h;
            d_t + (d_t - d_prev) * (0.5 / r)
        }
        _ => d_t.shallow_clone(),
    };
    x_t * ratio + d * (1.0 - ratio)
}

/// The history DPM-Solver++(2M) carries from one step to the next: the previous step's denoised estimate
/// (detached) and the noise level it was computed at. It never holds more than one estimate, so memory stays
/// flat in the number of steps. A fresh state (no history) makes the next step first order.
#[derive(Debug, Default)]
pub struct MultistepState {
    previous: Option<(Tensor, f64)>,
}

impl MultistepState {
    /// An empty history (the first step is first order).
    pub fn new() -> Self {
        Self::default()
    }

    /// The previous denoised estimate `d_prev`, if any (never requires grad).
    pub fn previous(&self) -> Option<&Tensor> {
        self.previous.as_ref().map(|(d, _)| d)
    }

    /// The noise level `σ_prev` of the previous estimate, if any.
    pub fn previous_sigma(&self) -> Option<f64> {
        self.previous.as_ref().map(|&(_, s)| s)
    }

    /// The number of estimates held: 0 before the first step, 1 after.
    pub fn len(&self) -> usize {
        usize::from(self.previous.is_some())
    }

    /// Whether no estimate is held.
    pub fn is_empty(&self) -> bool {
        self.previous.is_none()
    }

    /// Forgets the history.
    pub fn clear(&mut self) {
        self.previous = None;
    }
}

/// DPM-Solver++(2M) (Lu et al. 2022) on the VE probability-flow ODE: one denoiser call per step, `T + 1` in
/// total with the final denoise, second order in `h = Δλ` (`λ = −ln σ`) by reusing the previous step's denoised
/// estimate ([`dpmpp2m_update`]). Deterministic: a run draws only its initial noise from the [`NoiseRng`].
///
/// [`Sampler::sample_from`] carries the history in a [`MultistepState`] (one detached estimate, replaced every
/// step). [`Sampler::step`], which sees no history, takes the first-order step (DDIM / Euler): a caller that
/// drives the loop itself should use [`DpmPp2m::step_with`] with a [`MultistepState`] to get the second-order
/// solver.
///
/// ```
/// use diem_linalg::Dplr;
/// use diem_models::{GaussianDenoiser, VeSchedule};
/// use diem_sampling::{DpmPp2m, NoiseRng, Sampler, TimeGrid};
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prior = GaussianDenoiser::new(Tensor::zeros([2], (Kind::Double, Device::Cpu)),
///                                   Dplr::identity(2, Kind::Double, Device::Cpu))?;
/// let solver = DpmPp2m::new(VeSchedule::default(), TimeGrid::uniform(16)?);
/// let x = solver.sample(&prior, &[8, 2], Kind::Double, Device::Cpu, &mut NoiseRng::seeded(0))?;
/// assert_eq!((x.size(), solver.denoiser_calls()), (vec![8, 2], 17));
/// # Ok(())
/// # }
/// ```
///
/// # References
/// Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
/// Models", 2022, arXiv:2211.01095, Algorithm 2 (multistep, second order, data prediction).
#[derive(Debug)]
pub struct DpmPp2m {
    schedule: Box<dyn Schedule>,
    grid: TimeGrid,
}

impl DpmPp2m {
    /// DPM-Solver++(2M) on `grid` under `schedule`.
    pub fn new(schedule: impl Schedule + 'static, grid: TimeGrid) -> Self {
        Self { schedule: Box::new(schedule), grid }
    }

    /// One step `x_t → x_s` with the history in `state` ([`dpmpp2m_update`]), which it then replaces with
    /// `d(x_t, σ_t)` (detached). The result does not require grad when `x_t` does not.
    ///
    /// # Errors
    /// [`SamplingError::Shape`] when the denoiser's output does not have `x_t`'s shape, or when the state's
    /// estimate comes from a batch of another shape; a guided denoiser's errors.
    pub fn step_with(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        state: &mut MultistepState,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s) = (self.schedule.sigma_at(t), self.schedule.sigma_at(s));
        if let Some(prev) = state.previous() {
            if prev.size() != x_t.size() {
                return Err(SamplingError::shape(
                    "DpmPp2m::step_with",
                    "the state's previous estimate",
                    format!("{:?} (x_t's shape)", x_t.size()),
                    &prev.size(),
                ));
            }
        }
        let d = denoise_at(denoiser, x_t, sigma_t)?.detach();
        let previous = state.previous.as_ref().map(|(d, s)| (d, *s));
        let x_s = dpmpp2m_update(x_t, &d, previous, sigma_t, sigma_s);
        state.previous = Some((d, sigma_t));
        Ok(x_s)
    }
}

impl Sampler for DpmPp2m {
    fn name(&self) -> &'static str {
        "dpmpp2m"
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

    /// The first-order step (no history): `d + (σ_s/σ_t)(x_t − d)`, the DDIM / Euler step. The multistep
    /// solver runs in [`Sampler::sample_from`] or [`DpmPp2m::step_with`].
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        _rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        self.step_with(denoiser, x_t, t, s, &mut MultistepState::new())
    }

    /// The loop of [`Sampler::sample_from`] with a [`MultistepState`] carried across steps (one detached
    /// estimate), then the final denoise at `σ(t_T)`.
    fn sample_from(
        &self,
        denoiser: &dyn Denoiser,
        x_init: &Tensor,
        _rng: &mut NoiseRng,
        observer: &mut dyn StepObserver,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let schedule = self.schedule.as_ref();
        let steps = self.grid.steps();
        let mut state = MultistepState::new();
        let mut x = x_init.detach();
        for (index, (t, s)) in self.grid.pairs().enumerate() {
            x = self.step_with(denoiser, &x, t, s, &mut state)?.detach();
            let info =
                StepInfo { index, steps, t, s, sigma_t: schedule.sigma_at(t), sigma_s: schedule.sigma_at(s) };
            observer.on_step(&info, &x);
        }
        Ok(denoise_at(denoiser, &x, schedule.sigma_at(self.grid.end()))?.detach())
    }
}
