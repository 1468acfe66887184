//! The synthetic posterior problem of docs/method.md §10: a mixture of isotropic Gaussians on a random 1-D manifold,
//! observed through one linear Gaussian measurement, with its exact (closed-form) posterior.
//!
//! ```text
//! p(x)       = (1/Kc) Σ_i N(x | μ_i, s² I_n)                         (§10.1; μ_i from randman, m = 1)
//! y          = W x* + ε,  ε ~ N(0, σ_y² I_p),  x* = μ_1              (§10.3; W has unit-norm Gaussian rows)
//! C_y        = (I/s² + Wᵀ W / σ_y²)^{-1}
//! m_i^y      = C_y (μ_i/s² + Wᵀ y / σ_y²)
//! π_i        ∝ N(y | W μ_i, σ_y² I + s² W Wᵀ)
//! p(x_t | y) = Σ_i π_i N(x_t | m_i^y, C_y + σ_t² I)
//! ```

use diem_models::{MixtureDenoiser, Randman, RandmanConfig};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::random;

/// The shape of a mixture problem (docs/method.md §10.1, §10.3). [`Default`] is the reference configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureConfig {
    /// Ambient dimension n (3 in the figure).
    pub ambient_dim: i64,
    /// Number of mixture components Kc (256).
    pub components: i64,
    /// Per-coordinate standard deviation s of each component ("thickness", 0.01).
    pub std: f64,
    /// Observation dimension p (1).
    pub obs_dim: i64,
    /// Observation noise standard deviation σ_y (0.01).
    pub sigma_y: f64,
}

impl Default for MixtureConfig {
    fn default() -> Self {
        Self { ambient_dim: 3, components: 256, std: 0.01, obs_dim: 1, sigma_y: 0.01 }
    }
}

impl MixtureConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`BenchError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.ambient_dim < 1 {
            return Err(BenchError::config("ambient_dim", format!("must be ≥ 1, got {}", self.ambient_dim)));
        }
        if self.components < 2 {
            return Err(BenchError::config("components", format!("must be ≥ 2, got {}", self.components)));
        }
        if self.obs_dim < 1 {
            return Err(BenchError::config("obs_dim", format!("must be ≥ 1, got {}", self.obs_dim)));
        }
        for (name, v) in [("std", self.std), ("sigma_y", self.sigma_y)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(BenchError::config(name, format!("must be finite and > 0, got {v}")));
            }
        }
        Ok(())
    }
}

/// One drawn problem: prior centres, observation matrix and observation (float64, CPU).
#[derive(Debug)]
pub struct MixtureProblem {
    /// The configuration it was drawn from.
    pub config: MixtureConfig,
    /// Centres μ_i, `[Kc, n]`, every feature spanning exactly `[−2, 2]`.
    pub centres: Tensor,
    /// Observation matrix W, `[p, n]`, unit-norm rows.
    pub w: Tensor,
    /// The true latent x* = μ_1, `[n]`.
    pub x_star: Tensor,
    /// The observation y, `[p]`.
    pub y: Tensor,
}

impl MixtureProblem {
    /// Draws the manifold (randman with m = 1, α = 3, ε = 1e-3 from `seed`), the Kc centres, W and y.
    ///
    /// # Errors
    /// [`BenchError::Config`] for an invalid configuration; randman errors.
    pub fn generate(config: &MixtureConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let manifold = Randman::new(RandmanConfig::new(1, config.ambient_dim), seed)?;
        let (_, centres) = manifold.sample(config.components, seed.wrapping_add(0x5EED))?;
        let mut rng = random::stream(seed, 0);
        let w = random::normal(&mut rng, &[config.obs_dim, config.ambient_dim]);
        let w = &w / w.square().sum_dim_intlist(1, true, Kind::Double).sqrt();
        let x_star = centres.get(0);
        let noise = random::normal(&mut rng, &[config.obs_dim]);
        let y = w.mv(&x_star) + noise * config.sigma_y;
        Ok(Self { config: config.clone(), centres, w, x_star, y })
    }

    /// The analytic prior denoiser of docs/method.md §10.2.
    ///
    /// # Errors
    /// As [`MixtureDenoiser::new`].
    pub fn denoiser(&self) -> Result<MixtureDenoiser> {
        Ok(MixtureDenoiser::new(self.centres.shallow_clone(), self.config.std)?)
    }

    /// `count` prior samples `x = μ_i + s z` with `i` uniform, `[count, n]`.
    pub fn sample_prior(&self, rng: &mut StdRng, count: i64) -> Tensor {
        let idx = random::uniform_indices(rng, self.config.components, count);
        let z = random::normal(rng, &[count, self.config.ambient_dim]);
        self.centres.index_select(0, &idx) + z * self.config.std
    }

    /// `ln p(y | x)` up to a constant, `−||y − W x||² / (2 σ_y²)`, for `x: [N, n]` → `[N]`.
    pub fn log_likelihood(&self, x: &Tensor) -> Tensor {
        let r = self.y.unsqueeze(0) - x.matmul(&self.w.tr());
        r.square().sum_dim_intlist(1, false, Kind::Double) / (-2.0 * self.config.sigma_y.powi(2))
    }

    /// The closed-form posterior `p(x | y)` (docs/method.md §10.3).
    pub fn posterior(&self) -> ExactPosterior {
        let (n, s2, sy2) = (self.config.ambient_dim, self.config.std.powi(2), self.config.sigma_y.powi(2));
        let eye = Tensor::eye(n, (Kind::Double, tch::Device::Cpu));
        let precision = &eye / s2 + self.w.tr().matmul(&self.w) / sy2;
        let cov = precision.inverse();
        let cov = (&cov + cov.tr()) * 0.5;
        let data = self.w.tr().mv(&self.y) / sy2; // Wᵀ y / σ_y²
        let means = (&self.centres / s2 + data.unsqueeze(0)).matmul(&cov);
        // π_i ∝ N(y | W μ_i, σ_y² I + s² W Wᵀ): a shared covariance, so only the Mahalanobis term matters.
        let p = self.config.obs_dim;
        let s_y = Tensor::eye(p, (Kind::Double, tch::Device::Cpu)) * sy2 + self.w.matmul(&self.w.tr()) * s2;
        let r = self.y.unsqueeze(0) - self.centres.matmul(&self.w.tr()); // [Kc, p]
        let maha = (r.matmul(&s_y.inverse()) * &r).sum_dim_intlist(1, false, Kind::Double);
        let logits = maha * -0.5;
        let log_weights = &logits - logits.logsumexp(0, false);
        ExactPosterior { log_weights, means, cov }
    }
}

/// The exact posterior mixture `Σ_i π_i N(m_i^y, C_y)` and its noisy versions (docs/method.md §10.3).
#[derive(Debug)]
pub struct ExactPosterior {
    /// `ln π_i`, normalized, `[Kc]`.
    pub log_weights: Tensor,
    /// Component means `m_i^y`, `[Kc, n]`.
    pub means: Tensor,
    /// The shared component covariance `C_y`, `[n, n]`.
    pub cov: Tensor,
}

impl ExactPosterior {
    /// The noiseless-or-noisy component covariance `C_y + σ_t² I`.
    fn noisy_cov(&self, sigma_t: f64) -> Tensor {
        let n = self.cov.size()[0];
        &self.cov + Tensor::eye(n, (Kind::Double, tch::Device::Cpu)) * sigma_t.powi(2)
    }

    /// `count` draws of `p(x_t | y) = Σ_i π_i N(m_i^y, C_y + σ_t² I)`, `[count, n]` (σ_t = 0 gives `p(x | y)`).
    ///
    /// # Errors
    /// [`BenchError::Weights`] if the weights are degenerate; libtorch errors from the Cholesky factor.
    pub fn sample(&self, rng: &mut StdRng, count: i64, sigma_t: f64) -> Result<Tensor> {
        let idx = random::resample(rng, &self.log_weights, count, "exact posterior components")?;
        let n = self.cov.size()[0];
        let chol = self.noisy_cov(sigma_t).f_linalg_cholesky(false)?;
        let z = random::normal(rng, &[count, n]);
        Ok(self.means.index_select(0, &idx) + z.matmul(&chol.tr()))
    }

    /// The mean `Σ_i π_i m_i^y`, `[n]`.
    pub fn mean(&self) -> Tensor {
        self.log_weights.exp().unsqueeze(0).matmul(&self.means).squeeze_dim(0)
    }

    /// The covariance of `p(x_t | y)`: `C_y + σ_t² I + Σ_i π_i m_i m_iᵀ − m̄ m̄ᵀ`, `[n, n]`.
    pub fn covariance(&self, sigma_t: f64) -> Tensor {
        let pi = self.log_weights.exp();
        let mean = self.mean();
        let second = (&self.means * pi.unsqueeze(1)).tr().matmul(&self.means);
        self.noisy_cov(sigma_t) + second - mean.unsqueeze(1).matmul(&mean.unsqueeze(0))
    }
}
