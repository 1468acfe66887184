//! Conjugate gradient (paper Alg. 4; the authors' code; azula), with an optional curvature safeguard.

use crate::report::{accumulate, finish, plain, start, work, KrylovParams, Solved, SolvedWithImage, Tail};
use crate::space::{Image, Masks, NoImage, Scalars, VectorSpace};

/// Solves `K x = b` for symmetric positive-definite `K` by conjugate gradients, with a budget of `max_iter`
/// operator applications and an optional relative tolerance (docs/method.md §6.1). See [`cg_with`].
pub fn cg<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    max_iter: usize,
    rtol: Option<f64>,
) -> Solved<V> {
    cg_with(op, b, x0, &KrylovParams::new(max_iter).with_rtol(rtol))
}

/// Conjugate gradients with full parameters (docs/method.md §6.1).
///
/// Recurrence, per system (`x_0 = 0` skips the operator call and starts from `r = b`):
///
/// ```text
/// r = b − K x0;  p = r;  ρ = <r, r>
/// repeat max_iter times:
///     q  = K p
///     α  = ρ / <p, q>
///     x  = x + α p
///     r  = r − α q
///     ρ' = <r, r>;  β = ρ'/ρ
///     p  = r + β p;  ρ = ρ'
/// ```
///
/// With one iteration it returns `(<b, b> / <b, K b>) b`; on an SPD system of size m it converges in at most m
/// iterations (exact arithmetic).
///
/// Breakdown: a system whose curvature `<p, K p>` is not positive (non-SPD `K`, e.g. a network's `Jᵀ`), or whose
/// step or residual is not finite, keeps its last finite iterate and is flagged in
/// [`SolveReport::breakdown`](crate::SolveReport). A system whose residual reaches `θ ||b||` (θ = `rtol`, or the
/// `f64` epsilon without a tolerance) is frozen as converged, so no `0/0` appears. All of this is masking: no
/// host synchronization happens unless `rtol` is set. [`Safeguard`] raises the curvature test to a known lower
/// bound and replaces a failed step by a fallback step.
pub fn cg_with<V: VectorSpace>(op: impl Fn(&V) -> V, b: &V, x0: Option<&V>, p: &KrylovParams) -> Solved<V> {
    plain(cg_image(|v: &V| (op(v), NoImage), b, x0, p))
}

/// The curvature safeguard of a CG solve ([`Krylov::solve_safeguarded`](crate::Krylov::solve_safeguarded)),
/// for operators known to satisfy `<p, K p> ≥ <p, F p>` for some cheap `F`: MMPS's
/// `K = Σ_y + A V Aᵀ ⪰ Σ_y` whenever the covariance `V` is positive semi-definite (paper §4.2, eqs. 20–24).
///
/// Per system and iteration, with direction `p`:
///
/// ```text
/// CG step accepted  ⟺  <p, K p> > <p, F p>  and α = ρ/<p, K p>, <r', r'> finite        (F = 0 without a floor)
/// otherwise, with a fallback K_h (SPD) and its image L_h:
///     α_h = ρ / <p, K_h p>;  x ← x + α_h p;  L x ← L x + α_h (L_h p);  r ← r − α_h K_h p;  system frozen
/// ```
///
/// A step whose curvature falls below the floor has a length `ρ/<p, K p>` that no admissible `K` could produce
/// (up to `<p, F p>/<p, K p>` times too long, without bound as the curvature approaches 0), so it is never
/// taken. Without a fallback the system stops at its last iterate (plain CG's rejection, with the higher
/// floor). With one, the failed direction still contributes a step, under an operator that is SPD by
/// construction (MMPS: a covariance heuristic in place of the network's Tweedie covariance). The system then
/// stops: the conjugacy of later directions would refer to a mixture of two operators. Systems that took a
/// fallback step are flagged in [`SolveReport::fallback`](crate::SolveReport) (and in `breakdown`).
///
/// The fallback operator is applied to every system at every iteration (masked, so no host synchronization);
/// it should be cheap next to `K`. GMRES and BiCGSTAB ignore the safeguard.
pub struct Safeguard<'a, V, W> {
    /// `p ↦ F p` in the solver's working precision: a step along `p` fails when `<p, K p> ≤ <p, F p>`.
    /// `None`: `F = 0`, plain CG's test.
    pub floor: Option<&'a dyn Fn(&V) -> V>,
    /// `p ↦ (K_h p, L_h p)` for an operator input `p` in the model dtype, like the solve's operator: the SPD
    /// stand-in for `K` along a failed direction and its image. `None`: a failed system stops where it is.
    pub fallback: Option<&'a StandIn<'a, V, W>>,
}

/// The fallback operator of a [`Safeguard`]: `p ↦ (K_h p, L_h p)`.
pub type StandIn<'a, V, W> = dyn Fn(&V) -> (V, W) + 'a;

impl<V, W> Default for Safeguard<'_, V, W> {
    fn default() -> Self {
        Self { floor: None, fallback: None }
    }
}

impl<V, W> std::fmt::Debug for Safeguard<'_, V, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Safeguard")
            .field("floor", &self.floor.is_some())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

/// [`cg_with`] whose operator also returns the image `L v` of its input; returns `L x` beside `x`
/// (see [`Image`]).
pub(crate) fn cg_image<V: VectorSpace, W: Image<V::Scalar>>(
    op: impl Fn(&V) -> (V, W),
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> SolvedWithImage<V, W> {
    cg_safeguarded(op, &Safeguard::default(), b, x0, p)
}

/// [`cg_image`] under a [`Safeguard`].
pub(crate) fn cg_safeguarded<V: VectorSpace, W: Image<V::Scalar>>(
    op: impl Fn(&V) -> (V, W),
    guard: &Safeguard<'_, V, W>,
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> SolvedWithImage<V, W> {
    p.validate("cg")?;
    let red = p.reduction;
    let s = start(&op, b, x0, p);
    let mut image = s.image;
    let (mut x, mut r, threshold) = (s.x, s.r, s.threshold);
    let mut applications = s.applications;
    let mut rho = r.dot(&r, red);
    let mut dir = r.copy();
    let mut active = rho.gt(&threshold);
    let mut breakdown = rho.is_finite().not();
    let mut fallback = breakdown.and(&breakdown.not());
    let mut iterations = 0;
    for _ in 0..p.max_iter {
        if p.rtol.is_some() && !active.any() {
            break;
        }
        let (q, q_image) = op(&dir.to_model(b));
        let q = crate::report::work(&q, p);
        applications += 1;
        let pq = dir.dot(&q, red);
        let alpha = rho.div(&pq);
        let r_new = r.axpy(&alpha.neg(), &q);
        let rho_new = r_new.dot(&r_new, red);
        let curved = match guard.floor {
            Some(floor) => pq.gt(&dir.dot(&work(&floor(&dir), p), red)),
            None => pq.gt_value(0.0),
        };
        let ok = active.and(&curved).and(&alpha.is_finite()).and(&rho_new.is_finite());
        let zero = alpha.fill_like(0.0);
        let alpha_ok = V::Scalar::select(&ok, &alpha, &zero);
        x = x.axpy(&alpha_ok, &dir);
        image = Some(accumulate(image, &ok, &alpha_ok, &q_image));
        let failed = active.and(&ok.not());
        // The failed direction's step under the fallback operator (masked to the failed systems).
        let (mut r_next, mut rho_next) = (V::select(&ok, &r_new, &r), V::Scalar::select(&ok, &rho_new, &rho));
        if let Some(stand_in) = guard.fallback {
            let (qh, qh_image) = stand_in(&dir.to_model(b));
            let qh = work(&qh, p);
            let alpha_h = rho.div(&dir.dot(&qh, red));
            let r_h = r.axpy(&alpha_h.neg(), &qh);
            let rho_h = r_h.dot(&r_h, red);
            let take = failed.and(&alpha_h.gt_value(0.0)).and(&alpha_h.is_finite()).and(&rho_h.is_finite());
            let alpha_take = V::Scalar::select(&take, &alpha_h, &zero);
            x = x.axpy(&alpha_take, &dir);
            image = Some(accumulate(image, &take, &alpha_take, &qh_image));
            r_next = V::select(&take, &r_h, &r_next);
            rho_next = V::Scalar::select(&take, &rho_h, &rho_next);
            fallback = fallback.or(&take);
        }
        let beta = rho_new.div(&rho);
        let dir_new = r_new.axpy(&beta, &dir);
        dir = V::select(&ok, &dir_new, &dir);
        r = r_next;
        breakdown = breakdown.or(&failed);
        rho = rho_next;
        active = ok.and(&rho.gt(&threshold));
        iterations += 1;
    }
    let tail = Tail { iterations, applications, rr: rho, threshold, breakdown, fallback: Some(fallback) };
    finish(&x, image, b, p, tail)
}
