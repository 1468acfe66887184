//! Posterior guidance (docs/method.md §5): estimates of `E[x | x_t, y]` built on a prior denoiser.
//!
//! ```text
//! E[x | x_t, y] = d_θ(x_t, σ_t) + σ_t² ∇_{x_t} log p(y | x_t)          (Tweedie, VE: α_t = 1)
//! ```
//!
//! Methods that only correct the denoised mean are [`Denoiser`](diem_models::Denoiser) wrappers, usable by
//! any [`Sampler`](crate::Sampler): [`Mmps`] (with the covariance heuristics of [`CovHeuristic`]), [`Pgdm`],
//! [`Tmpd`] and [`DiffPir`]. They are one shell, [`Guided`] (the prior, the [`Measurement`], the counters, the
//! constructors and the [`Denoiser`](diem_models::Denoiser) impl), around one rule each, a [`Guidance`]:
//! [`MmpsGuidance`], [`PgdmGuidance`], [`TmpdGuidance`], [`DiffPirGuidance`]; `Mmps<'a>` is
//! `Guided<'a, MmpsGuidance>`, and a new rule (another covariance approximation, say) is one more
//! implementation of [`Guidance`]. [`Dps`] changes the transition (a gradient step after the unguided DDPM
//! step) and is therefore a [`Sampler`](crate::Sampler).
//!
//! Every wrapper counts its network forwards and vector-Jacobian products ([`GuidanceStats`]) so the costs of
//! docs/method.md §5.8 can be asserted:
//!
//! | method | forwards | VJPs per call |
//! | --- | --- | --- |
//! | [`Mmps`], Tweedie, n CG/GMRES iterations | 1 | n (BiCGSTAB: 2n); docs/method.md's n + 1 less the last |
//! | [`Mmps`] with a [`CovHeuristic`], [`Pgdm`] | 1 | 1 |
//! | [`Tmpd`] | 1 | 2 |
//! | [`DiffPir`] | 1 | 0 |
//! | [`Dps`] (per step) | 1 | 1 |
//!
//! All wrappers work on the whole batch at once, with per-sample operators `A_b`, per-sample noise levels and
//! per-sample Krylov systems (docs/method.md §6, §12.2 "Batch coupling"). Autograd is enabled only inside one
//! `denoise` call: the forward graph is kept across the solver's VJPs and released when the call returns (or by
//! a final VJP that does not keep it), and the returned tensor never requires grad (docs/method.md §12.2 "Graph
//! lifetime").

pub mod diffpir;
pub mod dps;
pub mod guided;
pub mod heuristic;
pub mod measurement;
pub mod mmps;
pub mod pgdm;
pub mod tmpd;

use std::cell::{Cell, RefCell};

use diem_linalg::{Krylov, KrylovParams, Reduction, Safeguard};
use tch::{Kind, Tensor};

use crate::error::{Result, SamplingError};

pub use diffpir::{DiffPir, DiffPirConfig, DiffPirGuidance};
pub use dps::Dps;
pub use guided::{Guidance, GuidanceCall, Guided};
pub use heuristic::CovHeuristic;
pub use measurement::Measurement;
pub use mmps::{Mmps, MmpsConfig, MmpsGuidance};
pub use pgdm::{Pgdm, PgdmConfig, PgdmGuidance};
pub use tmpd::{Tmpd, TmpdConfig, TmpdGuidance};

/// The Krylov solve inside a guidance step (docs/method.md §6): method, iteration budget, optional tolerance and the
/// batch reduction. Systems start from `v_0 = 0` without an operator call (docs/method.md §12.2).
///
/// The reduction couples the systems of one call or not: [`Reduction::PerSystem`] (the default) gives every
/// sample its own step sizes and stopping test; [`Reduction::Global`] makes the whole batch (an E-step chunk)
/// one system with shared step sizes and one stopping test, as the authors' JAX code does
/// ([`SolverConfig::coupled`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverConfig {
    /// CG, GMRES or BiCGSTAB.
    pub method: Krylov,
    /// Iterations (CG and GMRES: one operator application each; BiCGSTAB: two).
    pub iterations: usize,
    /// Optional relative tolerance; `None` runs exactly `iterations` with no host synchronization.
    pub rtol: Option<f64>,
    /// Per-sample systems (default) or one global system as in the authors' JAX code.
    pub reduction: Reduction,
}

impl SolverConfig {
    /// `iterations` of `method`, no tolerance, per-sample systems.
    pub fn new(method: Krylov, iterations: usize) -> Self {
        Self { method, iterations, rtol: None, reduction: Reduction::PerSystem }
    }

    /// `n` CG iterations.
    pub fn cg(n: usize) -> Self {
        Self::new(Krylov::Cg, n)
    }

    /// `n` GMRES iterations.
    pub fn gmres(n: usize) -> Self {
        Self::new(Krylov::Gmres, n)
    }

    /// `n` BiCGSTAB iterations.
    pub fn bicgstab(n: usize) -> Self {
        Self::new(Krylov::BiCgStab, n)
    }

    /// Sets the relative tolerance.
    pub fn with_rtol(mut self, rtol: Option<f64>) -> Self {
        self.rtol = rtol;
        self
    }

    /// Sets the batch reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Couples the systems of one call ([`Reduction::Global`]): shared step sizes and one stopping test over the
    /// batch, as the authors' JAX code; `false` restores per-sample systems.
    pub fn coupled(self, coupled: bool) -> Self {
        self.with_reduction(if coupled { Reduction::Global } else { Reduction::PerSystem })
    }

    /// The solver parameters (`f64` recurrences, operator inputs cast back to the model dtype).
    pub fn params(&self) -> KrylovParams {
        KrylovParams::new(self.iterations).with_rtol(self.rtol).with_reduction(self.reduction)
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<()> {
        if self.iterations == 0 {
            return Err(SamplingError::config(field, "iterations must be at least 1"));
        }
        if let Some(rtol) = self.rtol {
            if !(rtol.is_finite() && rtol >= 0.0) {
                return Err(SamplingError::config(field, format!("rtol must be finite and ≥ 0, got {rtol}")));
            }
        }
        Ok(())
    }

    /// Solves `K v = b` from `v_0 = 0`; returns `v` and the number of operator applications.
    pub(crate) fn solve(&self, op: impl Fn(&Tensor) -> Tensor, b: &Tensor) -> Result<(Tensor, usize)> {
        let (v, report) = self.method.solve(op, b, None, &self.params())?;
        Ok((v, report.applications))
    }

    /// Solves `K v = b` from `v_0 = 0` for an operator that returns `(K u, L u)` under a CG [`Safeguard`];
    /// returns `L v` (`None` when it is zero: no step was taken), the number of operator applications and the
    /// number of systems that took a fallback step, as a device tensor (counting it does not synchronize)
    /// ([`Krylov::solve_safeguarded`]).
    pub(crate) fn solve_guarded(
        &self,
        op: impl Fn(&Tensor) -> (Tensor, Tensor),
        guard: &Safeguard<'_, Tensor, Tensor>,
        b: &Tensor,
    ) -> Result<(Option<Tensor>, usize, Tensor)> {
        let (_, image, report) = self.method.solve_safeguarded(op, guard, b, None, &self.params())?;
        let fallbacks = report.fallback.0.sum(Kind::Int64);
        Ok((image, report.applications, fallbacks))
    }
}

/// Costs and solver events counted by a guidance wrapper since its creation or the last
/// [`reset`](Guided::reset_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuidanceStats {
    /// Calls of the wrapper (`denoise` for the denoisers, `step` for [`Dps`], whose final denoise is a plain
    /// prior call).
    pub calls: usize,
    /// Forward passes of the prior denoiser.
    pub forwards: usize,
    /// Vector-Jacobian products through the prior (backward passes).
    pub vjps: usize,
    /// Applications of the solver's operator `K` (each costs one VJP in the Tweedie path of MMPS).
    pub solver_applications: usize,
    /// Solver systems (one per sample and call, or one per call with coupled systems) whose CG step failed the
    /// curvature test and was replaced by a step under the fallback covariance ([`MmpsConfig::fallback`]).
    pub fallbacks: usize,
    /// Samples whose MMPS correction was shortened so as not to move the estimate away from the observation
    /// ([`MmpsConfig::damping`]), summed over calls.
    pub damped: usize,
}

impl GuidanceStats {
    /// The field names, in the order of [`GuidanceStats::to_array`].
    pub const FIELDS: [&'static str; 6] =
        ["calls", "forwards", "vjps", "solver_applications", "fallbacks", "damped"];

    /// Every counter, in the order of [`GuidanceStats::FIELDS`] (for reductions over processes and for
    /// serialization without naming each field).
    pub fn to_array(&self) -> [usize; 6] {
        let Self { calls, forwards, vjps, solver_applications, fallbacks, damped } = *self;
        [calls, forwards, vjps, solver_applications, fallbacks, damped]
    }

    /// The inverse of [`GuidanceStats::to_array`].
    pub fn from_array(values: [usize; 6]) -> Self {
        let [calls, forwards, vjps, solver_applications, fallbacks, damped] = values;
        Self { calls, forwards, vjps, solver_applications, fallbacks, damped }
    }
}

impl std::ops::AddAssign for GuidanceStats {
    /// Adds every counter (totals over the chunks of an E-step).
    fn add_assign(&mut self, other: Self) {
        let Self { calls, forwards, vjps, solver_applications, fallbacks, damped } = other;
        self.calls += calls;
        self.forwards += forwards;
        self.vjps += vjps;
        self.solver_applications += solver_applications;
        self.fallbacks += fallbacks;
        self.damped += damped;
    }
}

/// Interior-mutable counters (guidance wrappers are used through `&self`). Event counts computed on the device
/// (fallbacks, damped samples) are summed there and read back only when the counters are read, so a call adds
/// no host synchronization.
#[derive(Debug, Default)]
pub(crate) struct StatsCell {
    stats: Cell<GuidanceStats>,
    /// `[fallbacks, damped]` not yet read back (int64, on the device).
    pending: RefCell<Option<Tensor>>,
}

impl StatsCell {
    pub(crate) fn get(&self) -> GuidanceStats {
        let mut s = self.stats.get();
        if let Some(t) = self.pending.borrow_mut().take() {
            let v = Vec::<i64>::try_from(t.to_device(tch::Device::Cpu)).unwrap_or_default();
            s.fallbacks += v.first().copied().unwrap_or(0).max(0) as usize;
            s.damped += v.get(1).copied().unwrap_or(0).max(0) as usize;
            self.stats.set(s);
        }
        s
    }

    pub(crate) fn reset(&self) {
        self.stats.set(GuidanceStats::default());
        self.pending.borrow_mut().take();
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut GuidanceStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Adds device-side event counts (0-d int64 tensors) without synchronizing.
    pub(crate) fn add_events(&self, fallbacks: &Tensor, damped: &Tensor) {
        let add = Tensor::stack(&[fallbacks.to_kind(Kind::Int64), damped.to_kind(Kind::Int64)], 0).detach();
        let mut slot = self.pending.borrow_mut();
        *slot = Some(match slot.take() {
            Some(t) => t + add,
            None => add,
        });
    }
}

/// One forward graph `x̂ = d(x)` and the VJPs taken through it. Errors inside solver closures (which must
/// return a tensor) are recorded and surfaced by [`Tape::check`].
pub(crate) struct Tape<'t> {
    output: &'t Tensor,
    input: &'t Tensor,
    stats: &'t StatsCell,
    error: RefCell<Option<SamplingError>>,
}

impl<'t> Tape<'t> {
    pub(crate) fn new(output: &'t Tensor, input: &'t Tensor, stats: &'t StatsCell) -> Self {
        Self { output, input, stats, error: RefCell::new(None) }
    }

    /// `J^T u` (docs/method.md §3.4); keeps the graph when `keep_graph`. On failure records the error and returns zeros.
    pub(crate) fn vjp(&self, u: &Tensor, keep_graph: bool) -> Tensor {
        self.stats.update(|s| s.vjps += 1);
        let u = u.to_kind(self.output.kind());
        match diem_models::vjp(self.output, self.input, &u, keep_graph) {
            Ok(g) => g,
            Err(e) => {
                self.record(e.into());
                self.input.zeros_like()
            }
        }
    }

    /// Records the first error seen.
    pub(crate) fn record(&self, e: SamplingError) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// The first recorded error, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `σ²` broadcastable against `x : [N, ...]` (`[N, 1, …, 1]`, or a 0-d tensor for a shared σ), in `x`'s kind.
pub(crate) fn sigma_sq_like(sigma: &Tensor, x: &Tensor) -> Tensor {
    diem_models::sigma_like(&sigma.to_kind(x.kind()).to_device(x.device()), x).square()
}

/// The forward pass with autograd on: a fresh leaf `x` (detached copy of `x_t` requiring grad) and `d(x, σ)`.
pub(crate) fn forward_with_graph(
    prior: &dyn diem_models::Denoiser,
    x_t: &Tensor,
    sigma: &Tensor,
) -> (Tensor, Tensor) {
    let x = x_t.detach().set_requires_grad(true);
    let x_hat = prior.denoise(&x, sigma);
    (x, x_hat)
}
