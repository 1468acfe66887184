//! Entropic optimal transport between point clouds by log-domain Sinkhorn iterations (docs/method.md §9a, §10.5).
//!
//! For points `u_1..u_n` and `v_1..v_m` with uniform weights, cost `M_ij = ||u_i − v_j||²` and
//! regularization λ applied to `M` itself, the log-scalings `f ∈ R^n`, `g ∈ R^m` follow
//!
//! ```text
//! g_j = ln(1/m) − logsumexp_i( −M_ij/λ + f_i )
//! f_i = ln(1/n) − logsumexp_j( −M_ij/λ + g_j )
//! ```
//!
//! and every `check_every` iterations the column-marginal violation
//! `|| Σ_i exp(−M_ij/λ + f_i + g_j) − 1/m ||_2` is compared with the tolerance. The reported value is the
//! transport cost of the plan, `OT_λ(u, v) = Σ_ij T_ij M_ij` with `T_ij = exp(−M_ij/λ + f_i + g_j)` (no entropy
//! term), exactly as the reference computes it.
//!
//! With [`Sinkhorn::scaling`] (ε-scaling) the same iteration runs on a decreasing sequence of regularizations
//! ending at λ, the dual potentials carried along. On 64 spread-out points at the reference's λ = 1e-3 it
//! reached the 1e-3 tolerance in 131 iterations (factor 0.8) against 6,641 without it, and in 1,241 against
//! 11,801 on 256 points (release build, one thread).
//!
//! The cost matrix is never held whole when it would exceed [`Sinkhorn::max_block_bytes`]: it is recomputed in
//! row or column blocks at every half-iteration, so 16,384² problems run in bounded memory (docs/method.md §12.2).

use std::ops::Range;

use tch::{Kind, Tensor};

use crate::error::{check_points, MetricsError, Result};

/// The floor of the two-sample divergence (docs/method.md §9a).
pub const DIVERGENCE_FLOOR: f64 = 1e-6;

/// Settings of the log-domain Sinkhorn solver. [`Default`] gives docs/method.md §9a's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sinkhorn {
    /// Entropic regularization λ, applied to the unnormalized squared-distance cost (default 1e-3).
    pub lambda: f64,
    /// Maximum number of iterations (default 1024).
    pub max_iter: usize,
    /// Tolerance on the column-marginal violation (default 1e-3).
    pub tol: f64,
    /// How often the violation is checked, in iterations (default 10); each check synchronizes the device.
    pub check_every: usize,
    /// Largest cost block held at once, in bytes (default 256 MiB); larger problems are processed in blocks.
    pub max_block_bytes: usize,
    /// Floating-point kind of the computation (default `Double`).
    pub kind: Kind,
    /// ε-scaling (default `None`, as the reference): with `Some(q)`, `0 < q < 1`, the iterations start at a
    /// regularization of the problem's largest squared distance and multiply it by `q` after every
    /// iteration until it reaches λ, carrying the dual potentials `λ f`, `λ g` from one value to the next.
    /// The fixed point at λ is the same; small λ (the reference's 1e-3) gets there in far fewer iterations.
    /// The annealing iterations count towards `max_iter`.
    pub scaling: Option<f64>,
}

impl Default for Sinkhorn {
    fn default() -> Self {
        Self {
            lambda: 1e-3,
            max_iter: 1024,
            tol: 1e-3,
            check_every: 10,
            max_block_bytes: 256 << 20,
            kind: Kind::Double,
            scaling: None,
        }
    }
}

/// The outcome of one transport problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkhornReport {
    /// The transport cost `Σ_ij T_ij M_ij` of the final plan.
    pub cost: f64,
    /// Iterations run.
    pub iterations: usize,
    /// The last measured column-marginal violation.
    pub marginal_error: f64,
    /// Whether the violation fell below the tolerance.
    pub converged: bool,
}

/// Squared-distance cost blocks between two point clouds, dense when small, recomputed per block otherwise.
struct CostBlocks {
    u: Tensor,
    v: Tensor,
    u_sq: Tensor,
    v_sq: Tensor,
    dense: Option<Tensor>,
    row_chunk: i64,
    col_chunk: i64,
}

impl CostBlocks {
    fn new(u: &Tensor, v: &Tensor, kind: Kind, max_block_bytes: usize) -> Result<Self> {
        let u = u.f_to_kind(kind)?;
        let v = v.f_to_kind(kind)?;
        let (n, m) = (u.size()[0], v.size()[0]);
        let u_sq = u.f_square()?.f_sum_dim_intlist(1, false, kind)?;
        let v_sq = v.f_square()?.f_sum_dim_intlist(1, false, kind)?;
        let elem = kind.elt_size_in_bytes() as i64;
        let budget = (max_block_bytes as i64 / elem).max(1);
        let mut blocks = Self {
            u,
            v,
            u_sq,
            v_sq,
            dense: None,
            row_chunk: (budget / m).max(1),
            col_chunk: (budget / n).max(1),
        };
        if n.saturating_mul(m) <= budget {
            blocks.dense = Some(blocks.compute(0..n, 0..m)?);
        }
        Ok(blocks)
    }

    /// `M[rows, cols]` with `M_ij = ||u_i||² + ||v_j||² − 2 <u_i, v_j>`, clamped at 0.
    fn compute(&self, rows: Range<i64>, cols: Range<i64>) -> Result<Tensor> {
        let u = self.u.f_narrow(0, rows.start, rows.end - rows.start)?;
        let v = self.v.f_narrow(0, cols.start, cols.end - cols.start)?;
        let uu = self.u_sq.f_narrow(0, rows.start, rows.end - rows.start)?.f_unsqueeze(1)?;
        let vv = self.v_sq.f_narrow(0, cols.start, cols.end - cols.start)?.f_unsqueeze(0)?;
        let cross = u.f_matmul(&v.f_tr()?)?;
        Ok(uu.f_add(&vv)?.f_sub(&cross.f_mul_scalar(2.0)?)?.f_clamp_min(0.0)?)
    }

    fn block(&self, rows: Range<i64>, cols: Range<i64>) -> Result<Tensor> {
        match &self.dense {
            Some(m) => Ok(m.f_narrow(0, rows.start, rows.end - rows.start)?.f_narrow(
                1,
                cols.start,
                cols.end - cols.start,
            )?),
            None => self.compute(rows, cols),
        }
    }

    /// The largest entry of the cost matrix, computed block by block.
    fn max_cost(&self) -> Result<f64> {
        let mut max: f64 = 0.0;
        for r in self.row_ranges() {
            max = max.max(self.block(r, 0..self.m())?.f_max()?.double_value(&[]));
        }
        Ok(max)
    }

    fn n(&self) -> i64 {
        self.u.size()[0]
    }

    fn m(&self) -> i64 {
        self.v.size()[0]
    }

    fn row_ranges(&self) -> Vec<Range<i64>> {
        chunks(self.n(), if self.dense.is_some() { self.n() } else { self.row_chunk })
    }

    fn col_ranges(&self) -> Vec<Range<i64>> {
        chunks(self.m(), if self.dense.is_some() { self.m() } else { self.col_chunk })
    }
}

fn chunks(len: i64, size: i64) -> Vec<Range<i64>> {
    let size = size.max(1);
    (0..len).step_by(size as usize).map(|s| s..(s + size).min(len)).collect()
}

impl Sinkhorn {
    fn validate(&self) -> Result<()> {
        let bad = |name, value, expected| {
            Err(MetricsError::Parameter { metric: "sinkhorn", name, value, expected })
        };
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return bad("lambda", self.lambda, "a finite value > 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter", 0.0, "at least 1");
        }
        if self.check_every == 0 {
            return bad("check_every", 0.0, "at least 1");
        }
        if self.tol.is_nan() || self.tol < 0.0 {
            return bad("tol", self.tol, "a value >= 0");
        }
        if !matches!(self.kind, Kind::Float | Kind::Double) {
            return bad("kind", 0.0, "Float or Double");
        }
        if let Some(q) = self.scaling {
            if !(q > 0.0 && q < 1.0) {
                return bad("scaling", q, "a factor in (0, 1)");
            }
        }
        Ok(())
    }

    /// The entropic transport cost `OT_λ(u, v)` between point clouds `u: [n, d]` and `v: [m, d]`
    /// with uniform weights (module docs give the iteration).
    pub fn ot(&self, u: &Tensor, v: &Tensor) -> Result<SinkhornReport> {
        self.validate()?;
        let (_, du) = check_points("sinkhorn", "u", u)?;
        let (_, dv) = check_points("sinkhorn", "v", v)?;
        if du != dv {
            return Err(MetricsError::Shape {
                metric: "sinkhorn",
                what: format!("u and v must have the same dimension, got {du} and {dv}"),
            });
        }
        let device = u.device();
        let v = v.f_to_device(device)?;
        let blocks = CostBlocks::new(u, &v, self.kind, self.max_block_bytes)?;
        let (n, m) = (blocks.n(), blocks.m());
        let opts = (self.kind, device);
        let log_a = -(n as f64).ln();
        let log_b = -(m as f64).ln();
        let mut f = Tensor::f_zeros([n], opts)?;
        let mut g = Tensor::f_zeros([m], opts)?;
        let (rows, cols) = (blocks.row_ranges(), blocks.col_ranges());
        // ε-scaling: the regularization of each iteration, from the largest squared distance down to λ.
        let mut lambda = match self.scaling {
            Some(_) => blocks.max_cost()?.max(self.lambda),
            None => self.lambda,
        };
        let mut report =
            SinkhornReport { cost: 0.0, iterations: 0, marginal_error: f64::INFINITY, converged: false };
        for it in 0..self.max_iter {
            if let Some(q) = self.scaling {
                if it > 0 && lambda > self.lambda {
                    // Keep the dual potentials λ f and λ g while λ shrinks.
                    let next = (lambda * q).max(self.lambda);
                    f = f.f_mul_scalar(lambda / next)?;
                    lambda = next;
                }
            }
            let inv_lambda = 1.0 / lambda;
            // g_j = ln(1/m) − logsumexp_i(−M_ij/λ + f_i), one column block at a time.
            let mut parts = Vec::with_capacity(cols.len());
            for c in &cols {
                let z =
                    blocks.block(0..n, c.clone())?.f_mul_scalar(-inv_lambda)?.f_add(&f.f_unsqueeze(1)?)?;
                parts.push(z.f_logsumexp(0, false)?);
            }
            g = Tensor::f_cat(&parts, 0)?.f_neg()?.f_add_scalar(log_b)?;
            // f_i = ln(1/n) − logsumexp_j(−M_ij/λ + g_j), one row block at a time.
            let mut parts = Vec::with_capacity(rows.len());
            for r in &rows {
                let z =
                    blocks.block(r.clone(), 0..m)?.f_mul_scalar(-inv_lambda)?.f_add(&g.f_unsqueeze(0)?)?;
                parts.push(z.f_logsumexp(1, false)?);
            }
            f = Tensor::f_cat(&parts, 0)?.f_neg()?.f_add_scalar(log_a)?;
            report.iterations = it + 1;
            let annealing = lambda > self.lambda;
            if !annealing && (it % self.check_every == 0 || it + 1 == self.max_iter) {
                let mut col_mass = Tensor::f_zeros([m], opts)?;
                for r in &rows {
                    let log_t = self.log_plan(&blocks, r.clone(), &f, &g)?;
                    col_mass = col_mass.f_add(&log_t.f_exp()?.f_sum_dim_intlist(0, false, self.kind)?)?;
                }
                report.marginal_error = col_mass.f_sub_scalar(1.0 / m as f64)?.f_norm()?.double_value(&[]);
                if report.marginal_error < self.tol {
                    report.converged = true;
                    break;
                }
            }
        }
        if lambda > self.lambda {
            // Stopped while still annealing: express the potentials at λ for the reported plan.
            f = f.f_mul_scalar(lambda / self.lambda)?;
            g = g.f_mul_scalar(lambda / self.lambda)?;
        }
        let mut cost = Tensor::f_zeros([], opts)?;
        for r in &rows {
            let log_t = self.log_plan(&blocks, r.clone(), &f, &g)?;
            let m_blk = blocks.block(r.clone(), 0..m)?;
            cost = cost.f_add(&log_t.f_exp()?.f_mul(&m_blk)?.f_sum(self.kind)?)?;
        }
        report.cost = cost.double_value(&[]);
        if !report.cost.is_finite() {
            return Err(MetricsError::NonFinite { metric: "sinkhorn", input: "transport plan" });
        }
        Ok(report)
    }

    /// `ln T[rows, :] = −M/λ + f_i + g_j`.
    fn log_plan(&self, blocks: &CostBlocks, rows: Range<i64>, f: &Tensor, g: &Tensor) -> Result<Tensor> {
        let fr = f.f_narrow(0, rows.start, rows.end - rows.start)?.f_unsqueeze(1)?;
        Ok(blocks
            .block(rows, 0..blocks.m())?
            .f_mul_scalar(-1.0 / self.lambda)?
            .f_add(&fr)?
            .f_add(&g.f_unsqueeze(0)?)?)
    }

    /// The two-sample bias-corrected divergence of docs/method.md §9a:
    /// `S(v) = max( OT_λ(u1, v) − OT_λ(u1, u2), 1e-6 )`, where `u1` and `u2` are disjoint samples of the truth.
    pub fn two_sample_divergence(&self, u1: &Tensor, u2: &Tensor, v: &Tensor) -> Result<f64> {
        let against = self.ot(u1, v)?.cost;
        let baseline = self.ot(u1, u2)?.cost;
        Ok((against - baseline).max(DIVERGENCE_FLOOR))
    }

    /// The debiased (symmetric) Sinkhorn divergence `OT_λ(a, b) − ½ OT_λ(a, a) − ½ OT_λ(b, b)`.
    ///
    /// It vanishes for `a = b` and tends to the squared 2-Wasserstein distance as λ → 0.
    pub fn divergence(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        let ab = self.ot(a, b)?.cost;
        let aa = self.ot(a, a)?.cost;
        let bb = self.ot(b, b)?.cost;
        Ok(ab - 0.5 * aa - 0.5 * bb)
    }
}

/// The squared 2-Wasserstein distance between Gaussians `N(m1, S1)` and `N(m2, S2)`:
/// `||m1 − m2||² + tr( S1 + S2 − 2 (S2^{1/2} S1 S2^{1/2})^{1/2} )`.
///
/// Means are `[d]`, covariances `[d, d]` symmetric positive semi-definite; computed in f64.
pub fn gaussian_w2_squared(m1: &Tensor, s1: &Tensor, m2: &Tensor, s2: &Tensor) -> Result<f64> {
    let d = m1.size();
    if d.len() != 1 || m2.size() != d || s1.size() != [d[0], d[0]] || s2.size() != [d[0], d[0]] {
        return Err(MetricsError::Shape {
            metric: "gaussian_w2",
            what: format!(
                "expected means [d] and covariances [d, d], got {:?}, {:?}, {:?}, {:?}",
                m1.size(),
                s1.size(),
                m2.size(),
                s2.size()
            ),
        });
    }
    let (m1, m2) = (m1.f_to_kind(Kind::Double)?, m2.f_to_kind(Kind::Double)?);
    let (s1, s2) = (s1.f_to_kind(Kind::Double)?, s2.f_to_kind(Kind::Double)?);
    let root2 = psd_sqrt(&s2)?;
    let cross = psd_sqrt(&root2.f_matmul(&s1)?.f_matmul(&root2)?)?;
    let mean_term = m1.f_sub(&m2)?.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
    let trace = s1.f_add(&s2)?.f_sub(&cross.f_mul_scalar(2.0)?)?.f_trace()?.double_value(&[]);
    Ok(mean_term + trace)
}

/// Symmetric PSD square root through an eigendecomposition (negative round-off eigenvalues clamped to 0).
fn psd_sqrt(s: &Tensor) -> Result<Tensor> {
    let sym = s.f_add(&s.f_tr()?)?.f_mul_scalar(0.5)?;
    let (vals, vecs) = sym.f_linalg_eigh("L")?;
    let root = vals.f_clamp_min(0.0)?.f_sqrt()?;
    Ok(vecs.f_mul(&root.f_unsqueeze(0)?)?.f_matmul(&vecs.f_tr()?)?)
}
