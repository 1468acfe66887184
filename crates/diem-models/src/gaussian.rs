//! The exact denoiser of a Gaussian prior with a DPLR covariance (docs/method.md §7.2).
//!
//! ```text
//! E[x | x_t]   = x_t − σ² (Σ_x + σ² I)⁻¹ (x_t − μ_x)   (= μ_x + Σ_x (Σ_x + σ² I)⁻¹ (x_t − μ_x))
//! J            = I − σ² (Σ_x + σ² I)⁻¹                  (symmetric)
//! Cov[x | x_t] = σ² J = σ² I − σ⁴ (Σ_x + σ² I)⁻¹
//! ```
//! The inverse-times-vector is the Woodbury solve of [`Dplr`].

use diem_linalg::Dplr;
use tch::Tensor;

use crate::denoiser::Denoiser;
use crate::error::{Error, Result};

/// `E[x | x_t]` under the prior `N(μ_x, Σ_x)`, `Σ_x = diag(D) + U V` (docs/method.md §7.2). Inputs `x_t: [B, ...]`
/// whose per-sample size is N (flattened in row-major order), `σ: [B]` or `[]`.
#[derive(Debug)]
pub struct GaussianDenoiser {
    mean: Tensor,
    cov: Dplr,
}

impl GaussianDenoiser {
    /// The denoiser of `N(mean, cov)`; `mean: [N]` and an unbatched `cov` of size N.
    ///
    /// # Errors
    /// [`Error::Shape`] when `mean` is not `[N]` with N = `cov.dim()` or `cov` is batched.
    pub fn new(mean: Tensor, cov: Dplr) -> Result<Self> {
        let n = cov.dim();
        if mean.size() != [n] {
            return Err(Error::shape(
                "GaussianDenoiser mean",
                format!("[{n}] (the covariance's size)"),
                &mean.size(),
            ));
        }
        if !cov.batch_shape().is_empty() {
            return Err(Error::shape(
                "GaussianDenoiser covariance batch",
                "[] (one shared covariance)",
                &cov.batch_shape(),
            ));
        }
        Ok(Self { mean: mean.detach(), cov })
    }

    /// The prior mean `μ_x`, `[N]`.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The prior covariance `Σ_x`.
    pub fn cov(&self) -> &Dplr {
        &self.cov
    }

    /// `Σ_x + σ_b² I` for every sample: a DPLR batched as `[B, N]` (or unbatched for a scalar σ).
    fn noisy_cov(&self, sigma: &Tensor, b: i64) -> Result<Dplr> {
        let s2 = sigma.to_kind(self.mean.kind()).square();
        let c = if s2.dim() == 0 { s2 } else { s2.reshape([b, 1]) };
        Ok(self.cov.add_diag(&c)?)
    }

    /// The flattened input `[B, N]`, checked.
    fn flat(&self, x_t: &Tensor) -> Tensor {
        let size = x_t.size();
        let n = self.cov.dim();
        let per: i64 = size.iter().skip(1).product();
        assert!(
            !size.is_empty() && per == n,
            "GaussianDenoiser: x_t of shape {size:?} does not have {n} entries per sample"
        );
        x_t.reshape([size[0], n])
    }

    /// The dense closed-form `Cov[x | x_t] = σ² I − σ⁴ (Σ_x + σ² I)⁻¹` per sample, `[B, N, N]`
    /// (docs/method.md §7.2); it does not depend on `x_t`, only on σ (`[B]`).
    ///
    /// # Errors
    /// [`Error::Linalg`] when `Σ_x + σ² I` is singular.
    pub fn covariance(&self, sigma: &Tensor) -> Result<Tensor> {
        let b = sigma.size().first().copied().unwrap_or(1);
        let sigma =
            if sigma.dim() == 0 { sigma.reshape([1]).expand([b], false) } else { sigma.shallow_clone() };
        let inv = self.noisy_cov(&sigma, b)?.f_inverse()?.to_dense();
        let s2 = sigma.to_kind(self.mean.kind()).square().reshape([b, 1, 1]);
        let eye = Tensor::eye(self.cov.dim(), (self.mean.kind(), self.mean.device()));
        Ok(&s2 * eye - s2.square() * inv)
    }

    /// `Cov[x | x_t]` for one noise level as a DPLR, `σ² I − σ⁴ (Σ_x + σ² I)⁻¹` (docs/method.md §7.2), for the
    /// posterior samplers' exact `cov_x` path.
    ///
    /// # Errors
    /// [`Error::Linalg`] when `Σ_x + σ² I` is singular.
    pub fn covariance_dplr(&self, sigma: f64) -> Result<Dplr> {
        let s2 = sigma * sigma;
        Ok(self.cov.add_scalar(s2).f_inverse()?.scale(-s2 * s2).add_scalar(s2))
    }
}

impl Denoiser for GaussianDenoiser {
    /// `E[x | x_t] = x_t − σ² (Σ_x + σ² I)⁻¹ (x_t − μ_x)` (docs/method.md §7.2).
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let x = self.flat(x_t);
        let b = x.size()[0];
        let noisy = match self.noisy_cov(sigma, b) {
            Ok(m) => m,
            Err(e) => panic!("GaussianDenoiser: {e}"),
        };
        let s2 = sigma.to_kind(x.kind()).square();
        let s2 = if s2.dim() == 0 { s2 } else { s2.reshape([b, 1]) };
        let out = &x - s2 * noisy.solve(&(&x - &self.mean));
        out.reshape(x_t.size())
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        Some(&self.mean)
    }
}
