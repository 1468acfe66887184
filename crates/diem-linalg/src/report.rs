//! Solver parameters, the per-solve report, and the pieces shared by the three Krylov methods.

use crate::error::{LinalgError, Result};
use crate::space::{Image, Masks, NoImage, Reduction, Scalars, VectorSpace};

/// Parameters shared by [`cg`](crate::cg()), [`gmres`](crate::gmres()) and [`bicgstab`](crate::bicgstab()).
///
/// `rtol: None` (the default) runs exactly `max_iter` iterations with no host synchronization (azula,
/// the benchmark code). `Some(rtol)` freezes each system once `||r||² ≤ rtol² ||b||²` and stops when all are frozen, which
/// reads one flag back from the device per iteration (the authors' code, docs/method.md §6).
#[derive(Clone, Debug, PartialEq)]
pub struct KrylovParams {
    /// Iteration budget (operator applications: one per iteration for CG and GMRES, two for BiCGSTAB).
    pub max_iter: usize,
    /// Optional relative tolerance on the residual norm.
    pub rtol: Option<f64>,
    /// Per-system (default) or whole-batch inner products.
    pub reduction: Reduction,
    /// Run the recurrences in `f64` and cast operator inputs back to the model dtype (default `true`).
    pub work_f64: bool,
    /// GMRES only: restart length (`None`: no restart, one Arnoldi cycle of `max_iter` steps).
    pub restart: Option<usize>,
    /// GMRES only: the relative normalization/regularization floor ε, applied as `ε` times the system's own
    /// scale (`||b||`, or `||K V_j||` for Arnoldi column j; see [`gmres_with`](crate::gmres_with)). `None`: the
    /// machine epsilon of the right-hand side's dtype.
    pub eps: Option<f64>,
}

impl KrylovParams {
    /// `max_iter` iterations, no tolerance, per-system reductions, `f64` recurrences, no restart.
    pub fn new(max_iter: usize) -> Self {
        Self {
            max_iter,
            rtol: None,
            reduction: Reduction::PerSystem,
            work_f64: true,
            restart: None,
            eps: None,
        }
    }

    /// Sets the relative tolerance.
    pub fn with_rtol(mut self, rtol: Option<f64>) -> Self {
        self.rtol = rtol;
        self
    }

    /// Sets the reduction mode.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Chooses `f64` recurrences (`true`) or recurrences in the right-hand side's dtype (`false`).
    pub fn with_work_f64(mut self, work_f64: bool) -> Self {
        self.work_f64 = work_f64;
        self
    }

    /// Sets the GMRES restart length.
    pub fn with_restart(mut self, restart: Option<usize>) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the GMRES relative epsilon.
    pub fn with_eps(mut self, eps: Option<f64>) -> Self {
        self.eps = eps;
        self
    }

    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        if let Some(rtol) = self.rtol {
            if !(rtol.is_finite() && rtol >= 0.0) {
                return Err(LinalgError::InvalidParameter {
                    op,
                    name: "rtol",
                    value: rtol.to_string(),
                    expected: "a finite, non-negative number",
                });
            }
        }
        if let Some(eps) = self.eps {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(LinalgError::InvalidParameter {
                    op,
                    name: "eps",
                    value: eps.to_string(),
                    expected: "a finite, positive number",
                });
            }
        }
        if self.restart == Some(0) {
            return Err(LinalgError::InvalidParameter {
                op,
                name: "restart",
                value: "0".into(),
                expected: "at least 1 (or None)",
            });
        }
        Ok(())
    }
}

/// What a solve did, per system. Fields stay on the device; the `*_vec` accessors copy them to the host.
#[derive(Debug)]
pub struct SolveReport<S: Scalars> {
    /// Iterations run (the loop count shared by all systems; frozen systems stop changing earlier).
    pub iterations: usize,
    /// Operator applications made (skips the one for `x0 = 0`, docs/method.md §12.2).
    pub applications: usize,
    /// Per-system residual norm `||b − K x||` of the returned iterate, as tracked by the recurrence (GMRES: the
    /// Givens estimate `|g_n|`).
    pub residual_norm: S,
    /// Per-system flag: the recurrence broke down (non-SPD curvature for CG, vanishing inner product, non-finite
    /// value) and the system was frozen at its last finite iterate.
    pub breakdown: S::Mask,
    /// Per-system flag: `||r|| ≤ rtol ||b||` (or, without `rtol`, `||r|| ≤ ε_f64 ||b||`).
    pub converged: S::Mask,
    /// Per-system flag: a failed CG step was replaced by the step of a [`Safeguard`](crate::Safeguard)'s
    /// fallback operator (always unset for GMRES and BiCGSTAB, and without a fallback). Such a system is also
    /// flagged in [`SolveReport::breakdown`].
    pub fallback: S::Mask,
}

impl<S: Scalars> SolveReport<S> {
    /// Residual norms on the host, one per system.
    pub fn residual_norms(&self) -> Vec<f64> {
        self.residual_norm.to_vec()
    }

    /// Breakdown flags on the host, one per system.
    pub fn breakdowns(&self) -> Vec<bool> {
        self.breakdown.to_vec()
    }

    /// Convergence flags on the host, one per system.
    pub fn converged_flags(&self) -> Vec<bool> {
        self.converged.to_vec()
    }

    /// Whether any system broke down (synchronizes).
    pub fn any_breakdown(&self) -> bool {
        self.breakdown.any()
    }

    /// Fallback flags on the host, one per system.
    pub fn fallbacks(&self) -> Vec<bool> {
        self.fallback.to_vec()
    }
}

/// Result of a solve: the solution (in the right-hand side's dtype) and its report.
pub type Solved<V> = Result<(V, SolveReport<<V as VectorSpace>::Scalar>)>;

/// Result of a solve that carries images ([`Krylov::solve_with_image`](crate::Krylov::solve_with_image)): the
/// solution `x`, its image `L x` (`None` when no operator input contributed to `x`, i.e. `L x = 0`) and the
/// report.
pub type SolvedWithImage<V, W> = Result<(V, Option<W>, SolveReport<<V as VectorSpace>::Scalar>)>;

/// The shared start of every method: work copies of `b`, the initial iterate and residual, `||b||²` and the
/// squared-threshold `θ ||b||²` under which a system counts as converged.
pub(crate) struct Start<V: VectorSpace, W> {
    pub x: V,
    pub r: V,
    pub threshold: V::Scalar,
    pub applications: usize,
    /// The image of `x0` returned by the operator (`None`: `x0 = 0`, whose image is zero).
    pub image: Option<W>,
}

/// `θ`: `rtol²`, or `ε_f64²` without a tolerance (a floor that avoids `0/0` once a residual vanishes).
pub(crate) fn theta(p: &KrylovParams) -> f64 {
    match p.rtol {
        Some(t) => t * t,
        None => f64::EPSILON * f64::EPSILON,
    }
}

/// The work precision of `v` under `p`.
pub(crate) fn work<V: VectorSpace>(v: &V, p: &KrylovParams) -> V {
    if p.work_f64 {
        v.to_work()
    } else {
        v.copy()
    }
}

/// Initial state: `x = 0, r = b` when `x0` is `None` (no operator call), else `x = x0, r = b − K x0`.
pub(crate) fn start<V: VectorSpace, W>(
    op: &impl Fn(&V) -> (V, W),
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> Start<V, W> {
    let bw = work(b, p);
    let bb = bw.dot(&bw, p.reduction);
    let threshold = bb.mul_value(theta(p));
    match x0 {
        None => Start { x: bw.zeros_like(), r: bw, threshold, applications: 0, image: None },
        Some(x0) => {
            let (kx, image) = op(&x0.to_model(b));
            let kx = work(&kx, p);
            let minus_one = bb.fill_like(-1.0);
            Start {
                x: work(x0, p),
                r: bw.axpy(&minus_one, &kx),
                threshold,
                applications: 1,
                image: Some(image),
            }
        }
    }
}

/// The per-system bookkeeping every method hands to [`finish`].
pub(crate) struct Tail<S: Scalars> {
    pub iterations: usize,
    pub applications: usize,
    /// Squared residual norm of the returned iterate.
    pub rr: S,
    pub threshold: S,
    pub breakdown: S::Mask,
    /// Systems that took a fallback step (`None`: none can have).
    pub fallback: Option<S::Mask>,
}

/// The shared end: cast `x` back to the model dtype; a system whose result is not finite (an overflow in the
/// cast) is replaced by zeros and flagged, so no `NaN`/`inf` leaves a solver. The image of `x` (if carried) is
/// zeroed on the same systems.
pub(crate) fn finish<V: VectorSpace, W: Image<V::Scalar>>(
    x: &V,
    image: Option<W>,
    b: &V,
    p: &KrylovParams,
    tail: Tail<V::Scalar>,
) -> SolvedWithImage<V, W> {
    let x = x.to_model(b);
    let finite = x.dot(&x, p.reduction).is_finite();
    let x = V::select(&finite, &x, &x.zeros_like());
    let image = image.map(|w| W::select(&finite, &w, &w.zeros_like()));
    let (rr, threshold) = (&tail.rr, &tail.threshold);
    let at_threshold = rr.sub(threshold).nonzero().not();
    let converged = threshold.gt(rr).or(&at_threshold).and(&finite);
    let fallback = match tail.fallback {
        Some(f) => f.and(&finite),
        None => finite.and(&finite.not()),
    };
    let report = SolveReport {
        iterations: tail.iterations,
        applications: tail.applications,
        residual_norm: rr.sqrt(),
        breakdown: tail.breakdown.or(&finite.not()),
        converged,
        fallback,
    };
    Ok((x, image, report))
}

/// `image + a · term` for a step `x ← x + a p` whose `p` had image `term`; systems outside `ok` (whose step
/// coefficient is zero) take no part, so a non-finite image of a rejected step never leaks in as `0 · NaN`.
pub(crate) fn accumulate<S: Scalars, W: Image<S>>(image: Option<W>, ok: &S::Mask, a: &S, term: &W) -> W {
    let term = W::select(ok, term, &term.zeros_like());
    match image {
        None => term.scale(a),
        Some(w) => w.axpy(a, &term),
    }
}

/// Drops the image of a plain solve.
pub(crate) fn plain<V: VectorSpace>(solved: SolvedWithImage<V, NoImage>) -> Solved<V> {
    solved.map(|(x, _, report)| (x, report))
}
