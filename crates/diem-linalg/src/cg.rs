//! Conjugate gradient (SPEC.md §6.1; paper Alg. 4; \[ref\]; \[azula\]).

use crate::report::{accumulate, finish, plain, start, KrylovParams, Solved, SolvedWithImage, Tail};
use crate::space::{Image, Masks, NoImage, Scalars, VectorSpace};

/// Solves `K x = b` for symmetric positive-definite `K` by conjugate gradients, with a budget of `max_iter`
/// operator applications and an optional relative tolerance (SPEC.md §6.1). See [`cg_with`].
pub fn cg<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    max_iter: usize,
    rtol: Option<f64>,
) -> Solved<V> {
    cg_with(op, b, x0, &KrylovParams::new(max_iter).with_rtol(rtol))
}

/// Conjugate gradients with full parameters (SPEC.md §6.1).
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
/// host synchronization happens unless `rtol` is set.
pub fn cg_with<V: VectorSpace>(op: impl Fn(&V) -> V, b: &V, x0: Option<&V>, p: &KrylovParams) -> Solved<V> {
    plain(cg_image(|v: &V| (op(v), NoImage), b, x0, p))
}

/// [`cg_with`] whose operator also returns the image `L v` of its input; returns `L x` beside `x`
/// (see [`Image`]).
pub(crate) fn cg_image<V: VectorSpace, W: Image<V::Scalar>>(
    op: impl Fn(&V) -> (V, W),
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
        let ok = active.and(&pq.gt_value(0.0)).and(&alpha.is_finite()).and(&rho_new.is_finite());
        let alpha_ok = V::Scalar::select(&ok, &alpha, &alpha.fill_like(0.0));
        x = x.axpy(&alpha_ok, &dir);
        image = Some(accumulate(image, &ok, &alpha_ok, &q_image));
        let beta = rho_new.div(&rho);
        let dir_new = r_new.axpy(&beta, &dir);
        dir = V::select(&ok, &dir_new, &dir);
        r = V::select(&ok, &r_new, &r);
        breakdown = breakdown.or(&active.and(&ok.not()));
        rho = V::Scalar::select(&ok, &rho_new, &rho);
        active = ok.and(&rho.gt(&threshold));
        iterations += 1;
    }
    let tail = Tail { iterations, applications, rr: rho, threshold, breakdown };
    finish(&x, image, b, p, tail)
}
