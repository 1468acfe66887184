//! The [`Denoiser`] trait and the Tweedie formulas built on it (docs/method.md §3.1, §3.4).
//!
//! A denoiser is the map `(x_t, σ) ↦ E[x | x_t]` for `x_t = x + σ z`. Every sampler and every posterior
//! denoiser sees a prior only through this trait. Implementations must be differentiable with respect to
//! `x_t` (MMPS takes vector-Jacobian products through them) and must also work under `tch::no_grad`.

use tch::Tensor;

use crate::autograd::vjp;
use crate::error::{Error, Result};

/// A batched, differentiable denoiser `d(x_t, σ) = E[x | x_t]` (docs/method.md §3.1).
///
/// Shapes: `x_t` is `[N, ...]` (batch first, any per-sample shape) and `σ` is `[N]` (one noise level per
/// sample) or `[]` (shared); the output has `x_t`'s shape. Implementations run in evaluation mode (no
/// dropout); training goes through [`crate::EdmDenoiser::loss`].
pub trait Denoiser {
    /// `E[x | x_t]` at noise level `sigma`.
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor;

    /// The prior mean `μ_x` carried by the model (per-sample shape), if any. Samplers start at
    /// `μ_x + σ_max z` when it is present (docs/method.md §4.1, §12.2 "Starting mean").
    fn prior_mean(&self) -> Option<&Tensor> {
        None
    }
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        (**self).denoise(x_t, sigma)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        (**self).prior_mean()
    }
}

impl<D: Denoiser + ?Sized> Denoiser for Box<D> {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        (**self).denoise(x_t, sigma)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        (**self).prior_mean()
    }
}

/// Reshapes `σ` (`[]`, `[N]` or `[N, 1, …, 1]`) to broadcast against `x` of shape `[N, ...]`: `[N, 1, …, 1]`.
///
/// # Panics
/// When `σ` has more than one element per sample or its batch size differs from `x`'s (a broken caller
/// contract, as in the rest of the tensor code).
#[track_caller]
pub fn sigma_like(sigma: &Tensor, x: &Tensor) -> Tensor {
    let numel = sigma.numel() as i64;
    if sigma.dim() == 0 {
        return sigma.shallow_clone();
    }
    let n = x.size()[0];
    assert!(
        numel == n && sigma.size()[0] == n,
        "sigma of shape {:?} does not match a batch of shape {:?}",
        sigma.size(),
        x.size()
    );
    let mut shape = vec![n];
    shape.extend(std::iter::repeat_n(1, x.dim() - 1));
    sigma.reshape(shape)
}

/// The score from a denoiser, `∇ log p(x_t) = (d(x_t, σ) − x_t) / σ²` (docs/method.md §3.4).
pub fn score(denoiser: &(impl Denoiser + ?Sized), x_t: &Tensor, sigma: &Tensor) -> Tensor {
    let s = sigma_like(sigma, x_t);
    (denoiser.denoise(x_t, sigma) - x_t) / (&s * &s)
}

/// The dense Jacobian `J = ∂d(x_t, σ)/∂x_t` of every sample, `[N, D, D]` with `D` the per-sample size, by
/// `D` vector-Jacobian products through one forward graph (docs/method.md §3.4). Row `i` of `J_n` is `J_n^T e_i`.
///
/// Meant for small `D` (tests, the synthetic study): it costs `D` backward passes.
///
/// # Errors
/// When `x_t` has no batch dimension or autograd fails (e.g. the denoiser is not differentiable).
pub fn jacobian(denoiser: &(impl Denoiser + ?Sized), x_t: &Tensor, sigma: &Tensor) -> Result<Tensor> {
    let size = x_t.size();
    if size.is_empty() {
        return Err(Error::shape("jacobian: x_t", "[N, ...]", &size));
    }
    let n = size[0];
    let d: i64 = size[1..].iter().product();
    let x = x_t.detach().set_requires_grad(true);
    let out = tch::with_grad(|| denoiser.denoise(&x, sigma));
    let eye = Tensor::eye(d, (out.kind(), out.device()));
    let mut rows = Vec::with_capacity(d as usize);
    for i in 0..d {
        let u = eye.get(i).unsqueeze(0).expand([n, d], false).reshape(out.size());
        let g = vjp(&out, &x, &u, i + 1 < d)?;
        rows.push(g.reshape([n, d]));
    }
    Ok(Tensor::stack(&rows, 1))
}

/// The Tweedie covariance `Cov[x | x_t] = σ² J` (docs/method.md §3.4, eq. 5), dense `[N, D, D]`, via [`jacobian`].
///
/// # Errors
/// As [`jacobian`].
pub fn tweedie_covariance(
    denoiser: &(impl Denoiser + ?Sized),
    x_t: &Tensor,
    sigma: &Tensor,
) -> Result<Tensor> {
    let j = jacobian(denoiser, x_t, sigma)?;
    let n = j.size()[0];
    let s = if sigma.dim() == 0 { sigma.shallow_clone() } else { sigma.reshape([n, 1, 1]) };
    Ok(j * (&s * &s))
}
