//! BiCGSTAB with JAX semantics (docs/method.md §6.3; the authors' code's option `method = 'bicgstab'`).

use crate::report::{accumulate, finish, plain, start, work, KrylovParams, Solved, SolvedWithImage, Tail};
use crate::space::{Image, Masks, NoImage, Scalars, VectorSpace};

/// Solves `K x = b` for non-symmetric `K` by BiCGSTAB, at most `max_iter` iterations (two operator applications
/// each) and an optional relative tolerance (docs/method.md §6.3). See [`bicgstab_with`].
pub fn bicgstab<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    max_iter: usize,
    rtol: Option<f64>,
) -> Solved<V> {
    bicgstab_with(op, b, x0, &KrylovParams::new(max_iter).with_rtol(rtol))
}

/// BiCGSTAB with full parameters (docs/method.md §6.3).
///
/// Recurrence, per system (θ = `rtol`, or the `f64` epsilon without a tolerance):
///
/// ```text
/// r = b − K x0;  r̂ = r;  ρ = α = ω = 1;  p = q = r
/// repeat up to max_iter times:
///     ρ' = <r̂, r>;  β = (ρ'/ρ)(α/ω)
///     p  = r + β (p − ω q)
///     q  = K p;  α = ρ' / <r̂, q>
///     s  = r − α q
///     if ||s||² ≤ θ² ||b||²:  x = x + α p;  r = s;  stop (converged)
///     t  = K s;  ω = <t, s>/<t, t>
///     x  = x + α p + ω s;  r = s − ω t;  ρ = ρ'
///     stop (breakdown) if ρ' = 0, α = 0 or ω = 0
/// ```
///
/// Per system, a step whose scalars are zero or non-finite is rejected (the system keeps its last finite
/// iterate and is flagged as broken down); when only ω fails, the half step `x + α p` is kept. Stopped systems
/// are frozen by masking, with no host synchronization unless `rtol` is set.
pub fn bicgstab_with<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> Solved<V> {
    plain(bicgstab_image(|v: &V| (op(v), NoImage), b, x0, p))
}

/// [`bicgstab_with`] whose operator also returns the image `L v` of its input; returns `L x` beside `x`
/// (see [`Image`]).
pub(crate) fn bicgstab_image<V: VectorSpace, W: Image<V::Scalar>>(
    op: impl Fn(&V) -> (V, W),
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> SolvedWithImage<V, W> {
    p.validate("bicgstab")?;
    let red = p.reduction;
    let s0 = start(&op, b, x0, p);
    let mut image = s0.image;
    // The image of `dir` (`None` until a direction has been applied; its step coefficient is zero until then).
    let mut dir_image: Option<W> = None;
    let (mut x, mut r, threshold) = (s0.x, s0.r, s0.threshold);
    let mut applications = s0.applications;
    let r_hat = r.copy();
    let mut rr = r.dot(&r, red);
    let one = rr.fill_like(1.0);
    let zero = rr.fill_like(0.0);
    let (mut rho, mut alpha, mut omega) = (one.copy(), one.copy(), one.copy());
    let mut dir = r.copy();
    let mut q = r.copy();
    let mut active = rr.gt(&threshold);
    let mut breakdown = rr.is_finite().not();
    let mut iterations = 0;
    for _ in 0..p.max_iter {
        if p.rtol.is_some() && !active.any() {
            break;
        }
        let rho_new = r_hat.dot(&r, red);
        let beta = rho_new.div(&rho).mul(&alpha.div(&omega));
        let dir_new = r.axpy(&beta, &dir.axpy(&omega.neg(), &q));
        let (q_new, q_image) = op(&dir_new.to_model(b));
        let q_new = work(&q_new, p);
        let alpha_new = rho_new.div(&r_hat.dot(&q_new, red));
        let s = r.axpy(&alpha_new.neg(), &q_new);
        let ss = s.dot(&s, red);
        let half_ok = active
            .and(&rho_new.nonzero())
            .and(&alpha_new.is_finite())
            .and(&alpha_new.nonzero())
            .and(&ss.is_finite());
        let early = half_ok.and(&threshold.gt(&ss).or(&ss.sub(&threshold).nonzero().not()));
        let (t, s_image) = op(&s.to_model(b));
        let t = work(&t, p);
        applications += 2;
        let omega_new = t.dot(&s, red).div(&t.dot(&t, red));
        let r_full = s.axpy(&omega_new.neg(), &t);
        let rr_full = r_full.dot(&r_full, red);
        let full_ok = half_ok
            .and(&early.not())
            .and(&omega_new.is_finite())
            .and(&omega_new.nonzero())
            .and(&rr_full.is_finite());
        // x ← x + α p (half step) and, for full steps, + ω s.
        let a1 = V::Scalar::select(&half_ok, &alpha_new, &zero);
        let dir_safe = V::select(&half_ok, &dir_new, &dir);
        let s_safe = V::select(&full_ok, &s, &r);
        let a2 = V::Scalar::select(&full_ok, &omega_new, &zero);
        x = x.axpy(&a1, &dir_safe).axpy(&a2, &s_safe);
        let old_dir_image = dir_image.unwrap_or_else(|| q_image.zeros_like());
        let dir_image_safe = W::select(&half_ok, &q_image, &old_dir_image);
        image = Some(accumulate(image, &half_ok, &a1, &dir_image_safe));
        image = Some(accumulate(image, &full_ok, &a2, &s_image));
        dir_image = Some(dir_image_safe);
        let r_half = V::select(&half_ok, &s, &r);
        r = V::select(&full_ok, &r_full, &r_half);
        let rr_half = V::Scalar::select(&half_ok, &ss, &rr);
        rr = V::Scalar::select(&full_ok, &rr_full, &rr_half);
        dir = dir_safe;
        q = V::select(&half_ok, &q_new, &q);
        rho = V::Scalar::select(&full_ok, &rho_new, &rho);
        alpha = V::Scalar::select(&full_ok, &alpha_new, &alpha);
        omega = V::Scalar::select(&full_ok, &omega_new, &omega);
        breakdown = breakdown.or(&active.and(&full_ok.not()).and(&early.not()));
        active = full_ok.and(&rr.gt(&threshold));
        iterations += 1;
    }
    let tail = Tail { iterations, applications, rr, threshold, breakdown, fallback: None };
    finish(&x, image, b, p, tail)
}
