//! The posterior samplers of Table 4 with the benchmark code's hyperparameters (docs/method.md §9d), on the η = 1 sampler of
//! the prior's [`SamplingPlan`], and their per-step costs (docs/method.md §5.8, §11.3).
//!
//! | method | implementation | F / B per step |
//! | --- | --- | --- |
//! | `mmpsN` | [`Mmps`] with the Tweedie covariance, GMRES N iterations, as a denoiser under DDPM | 1 / N + 1 |
//! | `dps` | [`ScaledDps`]: [`Dps::guidance`] with ζ = 0.5 after the DDPM step | 1 / 1 |
//! | `pgdm` | VE prior: [`Pgdm`] (GMRES 5) under DDPM; VP prior: [`VpGdm`], the benchmark code's `√(ᾱ_s ᾱ_t)` weight | 1 / 1 |
//! | `tmpd` | [`Tmpd`] (row sums, GMRES 5) under DDPM | 1 / 2 |
//! | `diffpir` | [`DiffPir`] (λ = 8, GMRES 5) under DDPM | 1 / 0 |
//!
//! Mean-correcting methods (MMPS, TMPD, DiffPIR) put `x̂ + Δ` into the DDPM update, which is the benchmark code's
//! `x_s' + c_t Δ` in VE units (see [`prior`](super::prior)). DPS and GDM add their step after the update; in VE
//! units the benchmark code's VP increments become `ζ √((1 + σ_t²)(1 + σ_s²)) Jᵀ Aᵀ r/||r||` (DPS) and
//! `σ_t²/(1 + σ_t²) Jᵀ Aᵀ v` (GDM), with `J` the Jacobian in VE units. With a VE prior, DPS is diem's [`Dps`]
//! (weight 1) and GDM its VE analogue [`Pgdm`] (docs/method.md §5.4).

use std::cell::Cell;
use std::time::Instant;

use diem_models::{Denoiser, Schedule};
use diem_operators::{LinearOperator, NoiseCov, Observation};
use diem_sampling::{
    ddpm_update, denoise_at, sigma_tensor, CountingDenoiser, Ddpm, DiffPir, DiffPirConfig, Dps, Mmps,
    MmpsConfig, NoiseRng, Pgdm, PgdmConfig, Sampler, SolverConfig, TimeGrid, Tmpd, TmpdConfig,
};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::prior::{BenchPrior, SamplingPlan};
use crate::error::{BenchError, Result};

/// DPS step size ζ of the FFHQ runs (docs/method.md §5.3).
pub const DPS_ZETA: f64 = 0.5;
/// GMRES iterations of GDM, TMPD and DiffPIR (docs/method.md §9d).
pub const BASELINE_GMRES: usize = 5;

/// A posterior sampler of Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// DiffPIR, λ = 8, GMRES 5.
    DiffPir,
    /// DPS, ζ = 0.5.
    Dps,
    /// GDM (PiGDM), GMRES 5.
    Pgdm,
    /// TMPD, GMRES 5.
    Tmpd,
    /// MMPS, Tweedie covariance, GMRES with this many iterations.
    Mmps(usize),
}

impl Method {
    /// The default list, in Table 4's row order.
    pub const TABLE: [Self; 7] =
        [Self::DiffPir, Self::Dps, Self::Pgdm, Self::Tmpd, Self::Mmps(1), Self::Mmps(3), Self::Mmps(5)];

    /// The command-line and CSV name (`mmps3`, `dps`, …).
    pub fn name(self) -> String {
        match self {
            Self::DiffPir => "diffpir".into(),
            Self::Dps => "dps".into(),
            Self::Pgdm => "pgdm".into(),
            Self::Tmpd => "tmpd".into(),
            Self::Mmps(n) => format!("mmps{n}"),
        }
    }

    /// The row label of Table 4 (`MMPS (3)`, `GDM`, …).
    pub fn label(self) -> String {
        match self {
            Self::DiffPir => "DiffPIR".into(),
            Self::Dps => "DPS".into(),
            Self::Pgdm => "GDM".into(),
            Self::Tmpd => "TMPD".into(),
            Self::Mmps(n) => format!("MMPS ({n})"),
        }
    }

    /// Parses [`Method::name`] (`mmpsN` with N ≥ 1).
    ///
    /// # Errors
    /// [`BenchError::Config`] for an unknown name.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            BenchError::config(
                "--methods",
                format!("unknown method {name:?} (mmps1, mmps3, mmps5, …, dps, pgdm, tmpd, diffpir)"),
            )
        };
        Ok(match name {
            "diffpir" => Self::DiffPir,
            "dps" => Self::Dps,
            "pgdm" | "gdm" => Self::Pgdm,
            "tmpd" => Self::Tmpd,
            other => {
                let n: usize = other.strip_prefix("mmps").and_then(|n| n.parse().ok()).ok_or_else(bad)?;
                if n == 0 {
                    return Err(bad());
                }
                Self::Mmps(n)
            }
        })
    }

    /// Network VJPs per step (docs/method.md §5.8; MMPS takes its last product from the solve, so n rather than n + 1).
    pub fn expected_vjps_per_step(self) -> usize {
        match self {
            Self::DiffPir => 0,
            Self::Dps | Self::Pgdm => 1,
            Self::Tmpd => 2,
            Self::Mmps(n) => n,
        }
    }
}

/// Costs of one sampling run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    /// Steps T.
    pub steps: usize,
    /// Prior forwards over the T steps (the VE final denoise excluded), counted by [`CountingDenoiser`].
    pub forwards: usize,
    /// Network VJPs over the T steps (the VE final denoise excluded), counted by the guidance wrappers.
    pub vjps: usize,
    /// Wall-clock seconds of the run (initial draw to the synchronized result).
    pub seconds: f64,
}

impl RunCost {
    /// VJPs per step.
    pub fn vjps_per_step(&self) -> f64 {
        self.vjps as f64 / self.steps as f64
    }

    /// Forwards per step.
    pub fn forwards_per_step(&self) -> f64 {
        self.forwards as f64 / self.steps as f64
    }

    /// Milliseconds per step.
    pub fn ms_per_step(&self) -> f64 {
        1e3 * self.seconds / self.steps as f64
    }
}

/// DPS (docs/method.md §5.3) with a plan-dependent weight: `x_s = DDPM(x_t, x̂) + ζ w Jᵀ Aᵀ r/||r||₂`, with
/// `w = √((1 + σ_t²)(1 + σ_s²))` for a VP prior (the benchmark code's VP step in VE units) and `w = 1` for a VE prior
/// (then it is exactly diem's [`Dps`]).
#[derive(Debug)]
pub struct ScaledDps<'a> {
    dps: Dps<'a>,
    plan: SamplingPlan,
    zeta: f64,
}

impl<'a> ScaledDps<'a> {
    /// DPS with step `zeta` on `plan` for `y = A x + ε`.
    ///
    /// # Errors
    /// As [`Dps::new`].
    pub fn new(plan: &SamplingPlan, operator: &'a dyn LinearOperator, y: &Tensor, zeta: f64) -> Result<Self> {
        let dps = Dps::new(plan.schedule.clone(), plan.grid.clone(), operator, y, zeta)?;
        Ok(Self { dps, plan: plan.clone(), zeta })
    }

    /// VJPs so far.
    pub fn vjps(&self) -> usize {
        self.dps.stats().vjps
    }
}

impl Sampler for ScaledDps<'_> {
    fn name(&self) -> &'static str {
        "dps"
    }
    fn schedule(&self) -> &dyn Schedule {
        &self.plan.schedule
    }
    fn grid(&self) -> &TimeGrid {
        &self.plan.grid
    }
    fn calls_per_step(&self) -> usize {
        1
    }
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> diem_sampling::Result<Tensor> {
        let (sigma_t, sigma_s) = (self.plan.schedule.sigma_at(t), self.plan.schedule.sigma_at(s));
        let (g, x_hat) = self.dps.guidance(denoiser, x_t, &sigma_tensor(x_t, sigma_t))?;
        let eps = rng.normal_like(x_t);
        let w = self.zeta * self.plan.dps_weight(sigma_t, sigma_s);
        Ok(ddpm_update(x_t, &x_hat, sigma_t, sigma_s, &eps) + g * w)
    }
}

/// The benchmark code's GDM step (docs/method.md §5.4) in VE units for a VP prior: with `r_t² = σ_t²/(1 + σ_t²)` (= 1 − ᾱ_t),
///
/// ```text
/// solve (Σ_y + r_t² A Aᵀ) v = y − A x̂        (GMRES, no network in K)
/// x_s = DDPM(x_t, x̂) + r_t² Jᵀ Aᵀ v          (VP: x_s' + √(ᾱ_s ᾱ_t) r_t² J_vpᵀ Aᵀ v)
/// ```
///
/// Cost: 1 forward, 1 VJP per step.
#[derive(Debug)]
pub struct VpGdm<'a> {
    operator: &'a dyn LinearOperator,
    y: Tensor,
    noise: NoiseCov,
    solver: SolverConfig,
    plan: SamplingPlan,
    vjps: Cell<usize>,
}

impl<'a> VpGdm<'a> {
    /// GDM for `y = A x + ε`, `ε ~ N(0, noise)`, with `solver`.
    pub fn new(
        plan: &SamplingPlan,
        operator: &'a dyn LinearOperator,
        y: &Tensor,
        noise: NoiseCov,
        solver: SolverConfig,
    ) -> Self {
        Self { operator, y: y.detach(), noise, solver, plan: plan.clone(), vjps: Cell::new(0) }
    }

    /// VJPs so far.
    pub fn vjps(&self) -> usize {
        self.vjps.get()
    }
}

impl Sampler for VpGdm<'_> {
    fn name(&self) -> &'static str {
        "gdm"
    }
    fn schedule(&self) -> &dyn Schedule {
        &self.plan.schedule
    }
    fn grid(&self) -> &TimeGrid {
        &self.plan.grid
    }
    fn calls_per_step(&self) -> usize {
        1
    }
    fn step(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        t: f64,
        s: f64,
        rng: &mut NoiseRng,
    ) -> diem_sampling::Result<Tensor> {
        let (sigma_t, sigma_s) = (self.plan.schedule.sigma_at(t), self.plan.schedule.sigma_at(s));
        let r2 = sigma_t * sigma_t / (1.0 + sigma_t * sigma_t);
        let op = self.operator;
        let (x_hat, g) = tch::with_grad(|| -> diem_sampling::Result<(Tensor, Tensor)> {
            let x = x_t.detach().set_requires_grad(true);
            let x_hat = denoiser.denoise(&x, &sigma_tensor(&x, sigma_t));
            let xh = x_hat.detach();
            let r = self.y.to_kind(xh.kind()).to_device(xh.device()) - op.apply(&xh);
            let k = |v: &Tensor| self.noise.mul(v) + op.apply(&op.adjoint(v)) * r2;
            let (v, _) = self.solver.method.solve(k, &r, None, &self.solver.params())?;
            let u = op.adjoint(&v.to_kind(xh.kind()));
            self.vjps.set(self.vjps.get() + 1);
            let g = diem_models::vjp(&x_hat, &x, &u, false)? * r2;
            Ok((xh, g.detach()))
        })?;
        let eps = rng.normal_like(x_t);
        Ok(ddpm_update(x_t, &x_hat, sigma_t, sigma_s, &eps) + g)
    }
}

/// Runs `sampler` over the plan from `x0` with `denoiser`, then (VE) the final denoise with `last`. Returns the
/// sample, the seconds taken (synchronized) and `count()` read after the last step (before the final denoise).
#[allow(clippy::too_many_arguments)]
fn run_loop(
    plan: &SamplingPlan,
    sampler: &dyn Sampler,
    denoiser: &dyn Denoiser,
    last: &dyn Denoiser,
    x0: &Tensor,
    rng: &mut NoiseRng,
    start: Instant,
    count: &dyn Fn() -> (usize, usize),
) -> Result<(Tensor, f64, (usize, usize))> {
    let _guard = tch::no_grad_guard();
    let mut x = x0.detach();
    for (t, s) in plan.grid.pairs() {
        x = sampler.step(denoiser, &x, t, s, rng)?.detach();
    }
    let counts = count();
    if plan.final_denoise() {
        x = denoise_at(last, &x, plan.schedule.sigma_at(plan.grid.end()))?.detach();
    }
    // Reading a value synchronizes the device before the clock stops.
    let _ = x.sum(x.kind()).double_value(&[]);
    Ok((x, start.elapsed().as_secs_f64(), counts))
}

/// Draws one posterior sample per observation of `obs` (a batch) with `method` on `plan`, sampler noise from
/// `NoiseRng::seeded(seed)`. Returns the samples `[N, ..x_shape]` and the run's costs.
///
/// # Errors
/// Construction errors of the guidance wrappers and sampling errors.
pub fn sample_batch(
    prior: &BenchPrior,
    plan: &SamplingPlan,
    method: Method,
    obs: &Observation,
    seed: u64,
) -> Result<(Tensor, RunCost)> {
    let counted = CountingDenoiser::new(prior.denoiser());
    let op = obs.operator.as_ref();
    let y = obs.y.to_kind(prior.kind);
    let noise = obs.noise.clone();
    let mut shape = vec![y.size()[0]];
    shape.extend(op.x_shape());
    let mut rng = NoiseRng::seeded(seed);
    let start = Instant::now();
    let x0 = plan.draw_initial(&counted, &shape, prior.kind, y.device(), &mut rng)?;
    let ddpm = Ddpm::new(plan.schedule.clone(), plan.grid.clone());
    let gmres = SolverConfig::gmres(BASELINE_GMRES);
    let (x, seconds, (forwards, vjps)) = match method {
        Method::Mmps(n) => {
            let den = Mmps::new(&counted, op, &y, noise, MmpsConfig::gmres(n))?;
            run_loop(plan, &ddpm, &den, &den, &x0, &mut rng, start, &|| (counted.calls(), den.stats().vjps))?
        }
        Method::Tmpd => {
            let den = Tmpd::new(&counted, op, &y, noise, TmpdConfig { solver: gmres })?;
            run_loop(plan, &ddpm, &den, &den, &x0, &mut rng, start, &|| (counted.calls(), den.stats().vjps))?
        }
        Method::DiffPir => {
            let config = DiffPirConfig { solver: gmres, ..DiffPirConfig::default() };
            let den = DiffPir::new(&counted, op, &y, noise, config)?;
            run_loop(plan, &ddpm, &den, &den, &x0, &mut rng, start, &|| (counted.calls(), den.stats().vjps))?
        }
        Method::Pgdm if plan.vp => {
            let gdm = VpGdm::new(plan, op, &y, noise, gmres);
            run_loop(plan, &gdm, &counted, &counted, &x0, &mut rng, start, &|| (counted.calls(), gdm.vjps()))?
        }
        Method::Pgdm => {
            let den = Pgdm::new(&counted, op, &y, noise, PgdmConfig { solver: gmres })?;
            run_loop(plan, &ddpm, &den, &den, &x0, &mut rng, start, &|| (counted.calls(), den.stats().vjps))?
        }
        Method::Dps => {
            let dps = ScaledDps::new(plan, op, &y, DPS_ZETA)?;
            run_loop(plan, &dps, &counted, &counted, &x0, &mut rng, start, &|| (counted.calls(), dps.vjps()))?
        }
    };
    let cost = RunCost { steps: plan.steps(), forwards, vjps, seconds };
    Ok((x, cost))
}
