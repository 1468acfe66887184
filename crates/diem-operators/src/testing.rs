//! Checks every operator must pass (SPEC.md §12.1 item 1), usable from other crates' tests.

use tch::{Kind, Tensor};

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
pub fn autograd_adjoint(op: &dyn LinearOperator, x: &Tensor, u: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let ax = op.apply(&x);
    let loss = (ax * u.detach()).sum(u.kind());
    let grads = Tensor::run_backward(&[loss], &[&x], false, false);
    grads.into_iter().next().unwrap_or_else(|| x.zeros_like())
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
