//! GMRES with modified Gram–Schmidt Arnoldi and Givens rotations (docs/method.md §6.2; the benchmark code; azula).

use crate::report::{accumulate, finish, plain, start, work, KrylovParams, Solved, SolvedWithImage, Tail};
use crate::space::{Image, Masks, NoImage, Scalars, VectorSpace};

/// Solves `K x = b` for any nonsingular `K` by GMRES without restart, `max_iter` operator applications and an
/// optional relative tolerance (docs/method.md §6.2). See [`gmres_with`] for restarts and the epsilon.
pub fn gmres<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    max_iter: usize,
    rtol: Option<f64>,
) -> Solved<V> {
    gmres_with(op, b, x0, &KrylovParams::new(max_iter).with_rtol(rtol))
}

/// GMRES with full parameters (docs/method.md §6.2).
///
/// One cycle of `n` steps (`n = restart` or the remaining budget), per system, from `r = b − K x`:
///
/// ```text
/// β0 = ||r||;  V_0 = r / max(β0, ε ||b||);  g = (β0, 0, …, 0) ∈ R^{n+1}
/// for j = 0 .. n−1:
///     w = K V_j;  s_j = ||w||                                            (the operator's scale along V_j)
///     for i = 0 .. j:  H[i, j] = <w, V_i>;  w = w − H[i, j] V_i          (modified Gram–Schmidt)
///     H[j+1, j] = ||w||;  V_{j+1} = w / max(||w||, ε s_j)
///     for i = 0 .. j−1:  (h_i, h_{i+1}) ← (c_i h_i − s_i h_{i+1},  s_i h_i + c_i h_{i+1})
///     ρ = max(√(H[j,j]² + H[j+1,j]²), ε s_j);  c_j = H[j,j]/ρ;  s_j = −H[j+1,j]/ρ
///     H[j, j] ← ρ;  H[j+1, j] ← 0;  g[j+1] = s_j g[j];  g[j] = c_j g[j]
/// solve (H[0:n, 0:n] + ε diag(s)) y = g[0:n] (upper triangular);  x = x + Σ_j y_j V_j
/// ```
///
/// `|g[n]|` is the residual norm; it never increases with n. With one step it returns
/// `(<K b, b> / ||K b||²) b` up to a relative `ε`. ε defaults to the machine epsilon of `b`'s dtype. Every floor
/// and the regularizer are relative, `ε` times the scale of the system (`||b||`, or `||K V_j||` for column j),
/// so the solution of `(c K) x = b` is `x / c` for any scale `c`: an absolute ε of 1.2e-7 (f32) would add a
/// diagonal comparable to `K` itself when `K ≈ σ_y² I` with `σ_y = 1e-3`, and shrink every step by about 10 %.
/// With a restart length m the cycle repeats from the new residual (one extra operator application per
/// restart) until `max_iter` Arnoldi steps are spent.
///
/// Masking: a system whose Arnoldi step yields a non-finite value is flagged as broken down; it, and a system
/// whose residual estimate reaches `θ ||b||`, gets "dead" columns from then on (`H[:, j] = e_j`, rotation
/// `c = 0, s = 1`), which carries `g` forward unchanged and adds nothing to `x`: the returned iterate is the
/// last finite one.
pub fn gmres_with<V: VectorSpace>(
    op: impl Fn(&V) -> V,
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> Solved<V> {
    plain(gmres_image(|v: &V| (op(v), NoImage), b, x0, p))
}

/// [`gmres_with`] whose operator also returns the image `L v` of its input; returns `L x` beside `x`
/// (see [`Image`]).
pub(crate) fn gmres_image<V: VectorSpace, W: Image<V::Scalar>>(
    op: impl Fn(&V) -> (V, W),
    b: &V,
    x0: Option<&V>,
    p: &KrylovParams,
) -> SolvedWithImage<V, W> {
    p.validate("gmres")?;
    let red = p.reduction;
    let eps = p.eps.unwrap_or_else(|| b.epsilon());
    let s = start(&op, b, x0, p);
    let bw = work(b, p);
    let b_floor = bw.dot(&bw, red).sqrt().mul_value(eps).clamp_min(f64::MIN_POSITIVE);
    let mut image = s.image;
    let (mut x, mut r, threshold) = (s.x, s.r, s.threshold);
    let mut applications = s.applications;
    let rr0 = r.dot(&r, red);
    let mut active = rr0.gt(&threshold);
    let mut breakdown = rr0.is_finite().not();
    let mut residual_sq = rr0;
    let mut iterations = 0;
    let cycle_len = p.restart.unwrap_or(p.max_iter).max(1);
    let mut first_cycle = true;
    while iterations < p.max_iter {
        if p.rtol.is_some() && !active.any() {
            break;
        }
        if !first_cycle {
            // The restart's image of x is not needed: `image` already holds L x.
            let kx = work(&op(&x.to_model(b)).0, p);
            applications += 1;
            r = work(b, p).axpy(&residual_sq.fill_like(-1.0), &kx);
            let rr = r.dot(&r, red);
            let finite = rr.is_finite();
            breakdown = breakdown.or(&active.and(&finite.not()));
            active = active.and(&finite).and(&rr.gt(&threshold));
            residual_sq = V::Scalar::select(&finite, &rr, &residual_sq);
        }
        first_cycle = false;
        let n = cycle_len.min(p.max_iter - iterations);
        let out = arnoldi_cycle(&op, b, &r, n, (eps, &b_floor), active, &threshold, p);
        applications += out.steps;
        iterations += out.steps;
        x = x.add_combination(&out.y, &out.basis);
        for (yj, (ok, wj)) in out.y.iter().zip(&out.images) {
            image = Some(accumulate(image, ok, yj, wj));
        }
        breakdown = breakdown.or(&out.breakdown);
        active = out.active;
        residual_sq = V::Scalar::select(&out.finite_start, &out.g_last.mul(&out.g_last), &residual_sq);
    }
    let tail = Tail { iterations, applications, rr: residual_sq, threshold, breakdown, fallback: None };
    finish(&x, image, b, p, tail)
}

/// `x + Σ_j y_j V_j`.
trait Combine: VectorSpace {
    fn add_combination(&self, y: &[Self::Scalar], basis: &[Self]) -> Self {
        let mut x = self.copy();
        for (yj, vj) in y.iter().zip(basis) {
            x = x.axpy(yj, vj);
        }
        x
    }
}
impl<V: VectorSpace> Combine for V {}

struct Cycle<V: VectorSpace, W> {
    steps: usize,
    y: Vec<V::Scalar>,
    basis: Vec<V>,
    /// Per step: the systems whose Arnoldi step was accepted, and the image of the basis vector applied.
    images: Vec<(<V::Scalar as Scalars>::Mask, W)>,
    g_last: V::Scalar,
    breakdown: <V::Scalar as Scalars>::Mask,
    active: <V::Scalar as Scalars>::Mask,
    /// Systems whose starting residual was finite (their `g_last` is meaningful).
    finite_start: <V::Scalar as Scalars>::Mask,
}

/// `max(a, b)` per system.
fn max_s<S: Scalars>(a: &S, b: &S) -> S {
    S::select(&a.gt(b), a, b)
}

/// One Arnoldi/Givens cycle of at most `n` steps from residual `r` (see [`gmres_with`]); `(ε, ε ||b||)` are the
/// relative floor and the floor of the starting vector's normalization.
#[allow(clippy::too_many_arguments)]
fn arnoldi_cycle<V: VectorSpace, W>(
    op: &impl Fn(&V) -> (V, W),
    b: &V,
    r: &V,
    n: usize,
    (eps, b_floor): (f64, &V::Scalar),
    mut active: <V::Scalar as Scalars>::Mask,
    threshold: &V::Scalar,
    p: &KrylovParams,
) -> Cycle<V, W> {
    let red = p.reduction;
    let beta0 = r.dot(r, red).sqrt();
    let finite_start = beta0.is_finite();
    let zero = beta0.fill_like(0.0);
    let one = beta0.fill_like(1.0);
    let v0 = r.scale(&one.div(&max_s(&beta0, b_floor)));
    let mut basis = vec![V::select(&active, &v0, &r.zeros_like())];
    let mut g = vec![V::Scalar::select(&finite_start, &beta0, &zero)];
    let mut h_cols: Vec<Vec<V::Scalar>> = Vec::with_capacity(n);
    let (mut cs, mut sn): (Vec<V::Scalar>, Vec<V::Scalar>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut breakdown = zero.gt_value(1.0);
    let mut steps = 0;
    let mut images = Vec::with_capacity(n);
    // Per column: ε s_j, the relative floor and regularizer (the smallest positive f64 for dead columns).
    let mut floors: Vec<V::Scalar> = Vec::with_capacity(n);
    for j in 0..n {
        if j > 0 && p.rtol.is_some() && !active.any() {
            break;
        }
        let (w, w_image) = op(&basis[j].to_model(b));
        let mut w = work(&w, p);
        steps += 1;
        let scale = w.dot(&w, red).sqrt();
        let mut col = Vec::with_capacity(j + 2);
        for vi in basis.iter().take(j + 1) {
            let hij = w.dot(vi, red);
            w = w.axpy(&hij.neg(), vi);
            col.push(hij);
        }
        let hn2 = w.dot(&w, red);
        let col_sum = col.iter().fold(hn2.copy(), |acc, h| acc.add(h));
        let ok = active.and(&col_sum.is_finite());
        breakdown = breakdown.or(&active.and(&ok.not()));
        let hn = V::Scalar::select(&ok, &hn2.sqrt(), &zero);
        let mut col: Vec<V::Scalar> = col.iter().map(|h| V::Scalar::select(&ok, h, &zero)).collect();
        let floor = V::Scalar::select(&ok, &scale.mul_value(eps), &zero).clamp_min(f64::MIN_POSITIVE);
        let inv = one.div(&max_s(&hn, &floor));
        basis.push(V::select(&ok, &w.scale(&inv), &w.zeros_like()));
        // Apply the previous rotations to the new column.
        for i in 0..j {
            let (hi, hi1) = (&col[i], &col[i + 1]);
            let a = cs[i].mul(hi).sub(&sn[i].mul(hi1));
            let c = sn[i].mul(hi).add(&cs[i].mul(hi1));
            col[i] = a;
            col[i + 1] = c;
        }
        let rho = max_s(&col[j].mul(&col[j]).add(&hn.mul(&hn)).sqrt(), &floor);
        let c = V::Scalar::select(&ok, &col[j].div(&rho), &zero);
        let s = V::Scalar::select(&ok, &hn.neg().div(&rho), &one);
        col[j] = V::Scalar::select(&ok, &rho, &one);
        let gj = g[j].copy();
        g[j] = c.mul(&gj);
        g.push(s.mul(&gj));
        cs.push(c);
        sn.push(s);
        h_cols.push(col);
        active = ok.and(&g[j + 1].mul(&g[j + 1]).gt(threshold));
        floors.push(floor);
        images.push((ok, w_image));
    }
    // Back substitution: (H + ε diag(s)) y = g.
    let mut y: Vec<V::Scalar> = (0..steps).map(|_| zero.copy()).collect();
    for j in (0..steps).rev() {
        let mut acc = g[j].copy();
        for k in j + 1..steps {
            acc = acc.sub(&h_cols[k][j].mul(&y[k]));
        }
        y[j] = acc.div(&h_cols[j][j].add(&floors[j]));
    }
    basis.truncate(steps);
    Cycle { steps, y, basis, images, g_last: g[steps].abs(), breakdown, active, finite_start }
}
