//! Checks every operator must pass (docs/method.md §12.1 item 1), usable from other crates' tests and for
//! custom operators: [`check_operator`] runs them all and returns an [`OperatorReport`];
//! [`power_method`] and [`dense_norm`] estimate and compute `‖A‖₂`.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::noise::NoiseCov;
use crate::operator::LinearOperator;

/// Per-sample inner products `⟨a_b, b_b⟩` over all non-batch axes, in f64: `[N]`.
pub fn batch_dot(a: &Tensor, b: &Tensor) -> Tensor {
    let n = a.size()[0];
    (a.to_kind(Kind::Double) * b.to_kind(Kind::Double)).reshape([n, -1]).sum_dim_intlist(
        [1i64].as_slice(),
        false,
        Kind::Double,
    )
}

/// The largest per-sample relative adjoint gap
/// `|⟨A x, u⟩ − ⟨x, Aᵀ u⟩| / (‖A x‖ ‖u‖ + ‖x‖ ‖Aᵀ u‖)` for `x : [N, ..x_shape]`, `u : [N, ..y_shape]`.
pub fn adjoint_gap(op: &dyn LinearOperator, x: &Tensor, u: &Tensor) -> f64 {
    let ax = op.apply(x);
    let atu = op.adjoint(u);
    let lhs = batch_dot(&ax, u);
    let rhs = batch_dot(x, &atu);
    let scale = batch_dot(&ax, &ax).sqrt() * batch_dot(u, u).sqrt()
        + batch_dot(x, x).sqrt() * batch_dot(&atu, &atu).sqrt();
    ((lhs - rhs).abs() / scale.clamp_min(f64::MIN_POSITIVE)).max().double_value(&[])
}

/// The vector-Jacobian product `uᵀ ∂(A x)/∂x` by autograd (the gradient of `⟨A x, u⟩`).
/// Recorded under [`tch::with_grad`], so it also works inside `tch::no_grad` callers.
pub fn autograd_adjoint(op: &dyn LinearOperator, x: &Tensor, u: &Tensor) -> Tensor {
    tch::with_grad(|| {
        let x = x.detach().set_requires_grad(true);
        let ax = op.apply(&x);
        if !ax.requires_grad() {
            return x.detach().zeros_like();
        }
        let loss = (ax * u.detach()).sum(u.kind());
        let grads = Tensor::run_backward(&[loss], &[&x], false, false);
        match grads.into_iter().next() {
            Some(g) if g.defined() => g,
            _ => x.detach().zeros_like(),
        }
    })
}

/// The largest relative difference `‖Aᵀu − VJP(u)‖ / ‖Aᵀu‖` over the batch, between the explicit adjoint
/// and autograd's transpose of `apply`.
pub fn autograd_gap(op: &dyn LinearOperator, x: &Tensor, u: &Tensor) -> f64 {
    let explicit = op.adjoint(u);
    let vjp = autograd_adjoint(op, x, u);
    let diff = &explicit - &vjp;
    let num = batch_dot(&diff, &diff).sqrt();
    let den = batch_dot(&explicit, &explicit).sqrt().clamp_min(f64::MIN_POSITIVE);
    (num / den).max().double_value(&[])
}

/// A standard normal tensor `[n, ..shape]` in f64 on `device`, from `StdRng::seed_from_u64(seed)`.
fn probe(n: i64, shape: &[i64], device: Device, seed: u64) -> Tensor {
    let mut full = vec![n];
    full.extend(shape);
    NoiseCov::Isotropic { std: 1.0 }.sample(&full, Kind::Double, device, seed)
}

/// The dense matrices `[N, M, D]` of the per-sample maps (`M = y_numel`, `D = x_numel`), built column by
/// column by applying `op` to the basis vectors `e_j` (in f64, `N = batch()`). For small operators only:
/// it costs `D` applications.
pub fn dense_matrix(op: &dyn LinearOperator) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (n, d, m) = (op.batch(), op.x_numel(), op.y_numel());
    let mut shape = vec![n];
    shape.extend(op.x_shape());
    let columns: Vec<Tensor> = (0..d)
        .map(|j| {
            let e = Tensor::zeros([n, d], (Kind::Double, op.device()));
            let _ = e.narrow(1, j, 1).fill_(1.0);
            op.apply(&e.reshape(shape.as_slice())).reshape([n, m, 1])
        })
        .collect();
    Tensor::cat(&columns, 2)
}

/// The largest singular value of each sample's dense matrix ([`dense_matrix`]), `‖A_b‖₂`, by SVD.
pub fn dense_norm(op: &dyn LinearOperator) -> Vec<f64> {
    let (_, s, _) = dense_matrix(op).svd(true, false);
    let max = s.amax([-1i64].as_slice(), false);
    Vec::<f64>::try_from(&max.to_device(Device::Cpu)).unwrap_or_default()
}

/// The spectral norms `‖A_b‖₂` of the per-sample maps by the power method on the normal operator:
/// `v ← AᵀA v / ‖AᵀA v‖`, `‖A_b‖₂² ≈ ⟨v_b, AᵀA v_b⟩` (the Rayleigh quotient, a lower bound that converges
/// to the largest eigenvalue of `A_bᵀA_b`). Runs in f64 from a seeded Gaussian start, for at most `iters`
/// iterations or until every estimate changes by less than `rtol` (relative) between iterations. `N`
/// samples are estimated at once: `N = batch()` (at least 1).
pub fn power_method(op: &dyn LinearOperator, iters: usize, rtol: f64, seed: u64) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    let n = op.batch().max(1);
    let mut v = probe(n, &op.x_shape(), op.device(), seed);
    let normalize = |t: &Tensor| {
        let norm = batch_dot(t, t).sqrt().clamp_min(f64::MIN_POSITIVE);
        let mut shape = vec![n];
        shape.extend(std::iter::repeat_n(1, t.dim() - 1));
        t / norm.reshape(shape.as_slice())
    };
    v = normalize(&v);
    let mut estimate = Tensor::zeros([n], (Kind::Double, op.device()));
    for _ in 0..iters.max(1) {
        let w = op.gram(&v).to_kind(Kind::Double);
        let next = batch_dot(&v, &w).clamp_min(0.0).sqrt();
        let change = ((&next - &estimate).abs() / next.clamp_min(f64::MIN_POSITIVE)).max().double_value(&[]);
        estimate = next;
        if batch_dot(&w, &w).max().double_value(&[]) == 0.0 {
            break;
        }
        v = normalize(&w);
        if change < rtol {
            break;
        }
    }
    Vec::<f64>::try_from(&estimate.to_device(Device::Cpu)).unwrap_or_default()
}

/// What [`check_operator`] measured: the worst case over the test batch of each check.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorReport {
    /// The operator's kind string.
    pub kind: String,
    /// The dot test [`adjoint_gap`]: `max_b |⟨A x, u⟩ − ⟨x, Aᵀ u⟩| / (‖A x‖ ‖u‖ + ‖x‖ ‖Aᵀ u‖)`.
    pub dot_gap: f64,
    /// The adjoint against autograd's: `max_b ‖Aᵀu − VJP(u)‖ / ‖Aᵀu‖` ([`autograd_gap`]; 0 for an operator
    /// whose adjoint *is* the autograd default, up to rounding).
    pub autograd_gap: f64,
    /// Linearity: `‖A(a x + b z) − a A x − b A z‖ / (|a| ‖A x‖ + |b| ‖A z‖)`, worst over the batch.
    pub linearity_gap: f64,
    /// The largest per-sample spectral norm `max_b ‖A_b‖₂` by [`power_method`].
    pub norm: f64,
    /// Every per-sample norm estimate.
    pub norms: Vec<f64>,
    /// When the operator is persistable (its kind is built in or registered): the largest relative
    /// difference between `A x` and the same product by the operator rebuilt from its
    /// [`LinearOperator::params`] through [`crate::operator_from_params`]. `None` otherwise.
    pub persistence_gap: Option<f64>,
}

/// The checks every operator must pass (docs/method.md §12.1 item 1), the way deepinv tests its physics, on
/// seeded f64 probes of `N = max(batch(), 2)` samples: output shapes, linearity, the dot test
/// `⟨A x, u⟩ = ⟨x, Aᵀ u⟩` per sample, the adjoint against autograd's vector-Jacobian product, a
/// power-method estimate of `‖A‖₂`, and, for a persistable operator, the round trip through
/// `kind` + `params` + [`crate::operator_from_params`]. Every gap is relative and must be at most `tol`
/// (`1e-10` suits f64 operators built from matrix products and FFTs).
///
/// # Errors
/// [`Error::Check`] naming the operator, the failed check and the measured value.
pub fn check_operator(op: &dyn LinearOperator, tol: f64) -> Result<OperatorReport> {
    let kind = op.kind();
    let fail = |check: &'static str, reason: String| Error::Check { kind: kind.clone(), check, reason };
    let n = if op.batch() == 1 { 2 } else { op.batch() };
    let (x_shape, y_shape) = (op.x_shape(), op.y_shape());
    let device = op.device();
    let x = probe(n, &x_shape, device, 1);
    let z = probe(n, &x_shape, device, 2);
    let u = probe(n, &y_shape, device, 3);
    let ax = tch::no_grad(|| op.apply(&x));
    let atu = tch::no_grad(|| op.adjoint(&u));
    let expect = |shape: &[i64]| [&[n][..], shape].concat();
    if ax.size() != expect(&y_shape) || ax.kind() != Kind::Double {
        return Err(fail(
            "shape",
            format!("apply maps f64 [{n}, {x_shape:?}] to {:?} {:?}", ax.kind(), ax.size()),
        ));
    }
    if atu.size() != expect(&x_shape) || atu.kind() != Kind::Double {
        return Err(fail(
            "shape",
            format!("adjoint maps f64 [{n}, {y_shape:?}] to {:?} {:?}", atu.kind(), atu.size()),
        ));
    }
    let (a, b) = (0.7, -1.3);
    let linearity_gap = tch::no_grad(|| {
        let lhs = op.apply(&(&x * a + &z * b));
        let az = op.apply(&z);
        let diff = &lhs - &ax * a - &az * b;
        let scale = batch_dot(&ax, &ax).sqrt() * a.abs() + batch_dot(&az, &az).sqrt() * b.abs();
        (batch_dot(&diff, &diff).sqrt() / scale.clamp_min(f64::MIN_POSITIVE)).max().double_value(&[])
    });
    let dot_gap = tch::no_grad(|| adjoint_gap(op, &x, &u));
    let autograd_gap = autograd_gap(op, &x, &u);
    let norms = power_method(op, 500, 1e-12, 4);
    let norm = norms.iter().copied().fold(0.0, f64::max);
    let persistence_gap = persistence_gap(op, &x)?;
    for (check, gap) in [
        ("linearity", linearity_gap),
        ("dot", dot_gap),
        ("autograd", autograd_gap),
        ("persistence", persistence_gap.unwrap_or(0.0)),
    ] {
        if gap.is_nan() || gap > tol {
            return Err(fail(check, format!("relative gap {gap:e} > tolerance {tol:e}")));
        }
    }
    Ok(OperatorReport { kind, dot_gap, autograd_gap, linearity_gap, norm, norms, persistence_gap })
}

/// `max_b ‖A x − A' x‖ / ‖A x‖` for `A'` rebuilt from `op`'s kind and params, or `None` when `op` is not
/// persistable in this process.
fn persistence_gap(op: &dyn LinearOperator, x: &Tensor) -> Result<Option<f64>> {
    let kind = op.kind();
    if crate::params::check_persistable(&kind, &crate::registry::global_loader).is_err() {
        return Ok(None);
    }
    let arrays: BTreeMap<String, Tensor> =
        op.params().into_iter().map(|(k, t)| (k, t.to_device(Device::Cpu))).collect();
    let back = crate::operator_from_params(&kind, &arrays).map_err(|e| Error::Check {
        kind: kind.clone(),
        check: "persistence",
        reason: e.to_string(),
    })?;
    let back = back.to_device(op.device());
    let _guard = tch::no_grad_guard();
    let (a, b) = (op.apply(x), back.apply(x));
    let diff = &a - &b;
    let den = batch_dot(&a, &a).sqrt().clamp_min(f64::MIN_POSITIVE);
    Ok(Some((batch_dot(&diff, &diff).sqrt() / den).max().double_value(&[])))
}
