//! The analytic denoiser of a mixture of isotropic Gaussians (docs/method.md §10.1–10.2).
//!
//! ```text
//! p(x)        = (1/K) Σ_i N(x | μ_i, s² I)           v_t = s² + σ²
//! w_i(x_t)    = softmax_i(−||x_t − μ_i||² / (2 v_t))
//! m_i(x_t)    = (σ² μ_i + s² x_t) / v_t,             κ_t = s² σ² / v_t
//! E[x | x_t]  = Σ_i w_i m_i
//! Cov[x | x_t] = κ_t I + Σ_i w_i m_i m_iᵀ − E E ᵀ
//! ```

use tch::{Kind, Tensor};

use crate::denoiser::{sigma_like, Denoiser};
use crate::error::{Error, Result};

/// The exact denoiser `E[x | x_t]` of `p(x) = (1/K) Σ_i N(x | μ_i, s² I)` (docs/method.md §10.2). Works on batches
/// `x_t: [N, ...]` whose per-sample size equals the centres' dimension, in the centres' kind.
#[derive(Debug)]
pub struct MixtureDenoiser {
    centres: Tensor,
    std: f64,
    mean: Tensor,
}

impl MixtureDenoiser {
    /// A mixture with `centres: [K, D]` and per-coordinate standard deviation `std = s`.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `centres` is `[K, D]` with `K, D ≥ 1`; [`Error::Config`] unless `s > 0`.
    pub fn new(centres: Tensor, std: f64) -> Result<Self> {
        let size = centres.size();
        if size.len() != 2 || size[0] < 1 || size[1] < 1 {
            return Err(Error::shape("MixtureDenoiser centres", "[K, D] with K, D ≥ 1", &size));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(Error::config("mixture.std", format!("must be finite and > 0, got {std}")));
        }
        let centres = centres.detach();
        let mean = centres.mean_dim(0, false, centres.kind());
        Ok(Self { centres, std, mean })
    }

    /// The centres `[K, D]`.
    pub fn centres(&self) -> &Tensor {
        &self.centres
    }

    /// The component standard deviation s.
    pub fn std(&self) -> f64 {
        self.std
    }

    /// The flattened `[N, D]` input, its `[N, 1]` noise levels and `v_t`, in the centres' kind.
    fn prepare(&self, x_t: &Tensor, sigma: &Tensor) -> (Tensor, Tensor, Tensor) {
        let d = self.centres.size()[1];
        let n = x_t.size()[0];
        let x = x_t.reshape([n, d]);
        assert!(
            x.kind() == self.centres.kind(),
            "MixtureDenoiser: x_t is {:?}, centres are {:?}",
            x.kind(),
            self.centres.kind()
        );
        let s = sigma_like(&sigma.to_kind(x.kind()), &x).expand([n, 1], false);
        let v = &s * &s + self.std * self.std;
        (x, s, v)
    }

    /// The responsibilities `w_i(x_t)`, `[N, K]` (docs/method.md §10.2), with the common `||x_t||²` dropped from the
    /// logits for accuracy.
    fn weights(&self, x: &Tensor, v: &Tensor) -> Tensor {
        let mu2 = self.centres.square().sum_dim_intlist(1, false, x.kind()) * 0.5;
        ((x.matmul(&self.centres.tr()) - mu2) / v).softmax(-1, x.kind())
    }

    /// `ln p(x_t)` under the noisy prior `(1/K) Σ_i N(x_t | μ_i, v_t I)`, `[N]` (docs/method.md §10.2).
    pub fn log_prob(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let (x, _, v) = self.prepare(x_t, sigma);
        let (k, d) = (self.centres.size()[0], self.centres.size()[1]);
        let diff = x.unsqueeze(1) - self.centres.unsqueeze(0);
        let d2 = diff.square().sum_dim_intlist(-1, false, x.kind());
        let lse = (-d2 / (&v * 2.0)).logsumexp(-1, false);
        lse - (k as f64).ln() - (v.squeeze_dim(1) * (2.0 * std::f64::consts::PI)).log() * (d as f64 / 2.0)
    }

    /// The closed-form `Cov[x | x_t] = κ_t I + Σ_i w_i m_i m_iᵀ − E Eᵀ`, `[N, D, D]` (docs/method.md §10.2).
    pub fn covariance(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let (x, s, v) = self.prepare(x_t, sigma);
        let s2 = &s * &s;
        let w = self.weights(&x, &v);
        // m_i − E = (σ²/v)(μ_i − μ̄), so Σ w m mᵀ − E Eᵀ = (σ²/v)² (Σ w μ μᵀ − μ̄ μ̄ᵀ).
        let mu_bar = w.matmul(&self.centres); // [N, D]
        let second = (w.unsqueeze(-1) * self.centres.unsqueeze(0)).transpose(1, 2).matmul(&self.centres);
        let spread = second - mu_bar.unsqueeze(2) * mu_bar.unsqueeze(1);
        let ratio = (&s2 / &v).unsqueeze(-1);
        let kappa = (s2 * (self.std * self.std) / &v).unsqueeze(-1);
        let d = self.centres.size()[1];
        let eye = Tensor::eye(d, (x.kind(), x.device())).unsqueeze(0);
        kappa * eye + ratio.square() * spread
    }
}

impl Denoiser for MixtureDenoiser {
    /// `E[x | x_t] = Σ_i w_i m_i = (σ² Σ_i w_i μ_i + s² x_t) / v_t` (docs/method.md §10.2).
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        let (x, s, v) = self.prepare(x_t, sigma);
        let w = self.weights(&x, &v);
        let out = (&s * &s * w.matmul(&self.centres) + &x * (self.std * self.std)) / v;
        out.reshape(x_t.size())
    }

    /// The mixture's mean `(1/K) Σ_i μ_i`.
    fn prior_mean(&self) -> Option<&Tensor> {
        Some(&self.mean)
    }
}

/// `Kind` helper for tests and callers: the mixture computes in its centres' kind.
impl MixtureDenoiser {
    /// The kind (f32 or f64) the mixture computes in.
    pub fn kind(&self) -> Kind {
        self.centres.kind()
    }
}
