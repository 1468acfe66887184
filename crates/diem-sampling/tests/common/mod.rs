//! Shared helpers for the integration tests: Gaussian problems in f64, dense closed forms, sample moments.
#![allow(dead_code)]

use diem_linalg::Dplr;
use diem_models::GaussianDenoiser;
use diem_operators::Projection;
use tch::{Device, Kind, Tensor};

pub const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// A seeded standard-normal tensor (host RNG, f64).
pub fn randn(shape: &[i64], seed: u64) -> Tensor {
    diem_sampling::NoiseRng::seeded(seed).normal(shape, Kind::Double, Device::Cpu)
}

/// A Gaussian prior in `d` dimensions: mean of norm ~1, covariance `diag(D) + U Uᵀ` with `D ∈ [0.05, 0.3]`
/// and a rank-`r` factor.
pub fn gaussian_prior(d: i64, r: i64, seed: u64) -> GaussianDenoiser {
    let mean = randn(&[d], seed) * 0.7 + 0.5;
    let diag = randn(&[d], seed + 1).abs().clamp(0.0, 1.0) * 0.25 + 0.05;
    let u = randn(&[d, r], seed + 2) * 0.6;
    GaussianDenoiser::new(mean, Dplr::symmetric(diag, u).unwrap()).unwrap()
}

/// The dense prior covariance `[d, d]`.
pub fn dense_cov(prior: &GaussianDenoiser) -> Tensor {
    prior.cov().to_dense()
}

/// The exact `E[x | x_t, y] = P⁻¹ (Σ⁻¹ μ + x_t/σ² + Aᵀ Σ_y⁻¹ y)` with `P = Σ⁻¹ + I/σ² + Aᵀ Σ_y⁻¹ A`, per sample
/// (docs/method.md §12.1 item 6). `a : [B, m, d]`, `x_t : [B, d]`, `y : [B, m]`, `sigma_y` scalar.
pub fn exact_posterior_mean(
    prior: &GaussianDenoiser,
    a: &Tensor,
    x_t: &Tensor,
    y: &Tensor,
    sigma: f64,
    sigma_y: f64,
) -> Tensor {
    let d = x_t.size()[1];
    let sigma_inv = dense_cov(prior).inverse();
    let eye = Tensor::eye(d, F64);
    let at = a.transpose(1, 2);
    let p = (&sigma_inv + &eye / (sigma * sigma)).unsqueeze(0) + at.matmul(a) / (sigma_y * sigma_y);
    let rhs = sigma_inv.matmul(&prior.mean().unsqueeze(1)).squeeze_dim(1).unsqueeze(0)
        + x_t / (sigma * sigma)
        + at.matmul(&y.unsqueeze(2)).squeeze_dim(2) / (sigma_y * sigma_y);
    Tensor::linalg_solve(&p, &rhs.unsqueeze(2), true).squeeze_dim(2)
}

/// The clean posterior `N(m, C)` of one observation `y0 : [m]` through `a0 : [m, d]`.
pub fn exact_posterior(prior: &GaussianDenoiser, a0: &Tensor, y0: &Tensor, sigma_y: f64) -> (Tensor, Tensor) {
    let sigma_inv = dense_cov(prior).inverse();
    let p = &sigma_inv + a0.tr().matmul(a0) / (sigma_y * sigma_y);
    let c = p.inverse();
    let rhs =
        sigma_inv.matmul(&prior.mean().unsqueeze(1)).squeeze_dim(1) + a0.tr().mv(y0) / (sigma_y * sigma_y);
    (c.mv(&rhs), c)
}

/// One observation of a Gaussian prior repeated for `n` samples, with its exact posterior: the linear Gaussian
/// problem the posterior-moment tests share.
pub struct OnePosterior {
    /// The prior `N(μ, Σ)` on `R^d` (rank-3 DPLR, seed 30).
    pub prior: GaussianDenoiser,
    /// The shared `m × d` projection `A` (seed 31, entries of variance `1/d`).
    pub op: Projection,
    /// `y = A x + σ_y ε` for one `x` drawn from the prior (seeds 32, 33), repeated: `[n, m]`.
    pub y: Tensor,
    /// The posterior mean `[d]`.
    pub mean: Tensor,
    /// The posterior covariance `[d, d]`.
    pub cov: Tensor,
}

/// [`OnePosterior`] for `n` samples in `R^d` seen through `m` projections with noise `sigma_y`.
pub fn one_posterior(n: i64, d: i64, m: i64, sigma_y: f64) -> OnePosterior {
    let prior = gaussian_prior(d, 3, 30);
    let a0 = randn(&[m, d], 31) / (d as f64).sqrt();
    let op = Projection::new(a0.unsqueeze(0), &[d]).expect("a valid projection");
    let x_true = prior.mean() + dense_cov(&prior).linalg_cholesky(false).mv(&randn(&[d], 32));
    let y0 = a0.mv(&x_true) + randn(&[m], 33) * sigma_y;
    let y = y0.unsqueeze(0).expand([n, m], false).contiguous();
    let (mean, cov) = exact_posterior(&prior, &a0, &y0, sigma_y);
    OnePosterior { prior, op, y, mean, cov }
}

/// Sample mean `[d]` and biased covariance `[d, d]` of `x : [N, d]`.
pub fn moments(x: &Tensor) -> (Tensor, Tensor) {
    let n = x.size()[0] as f64;
    let mean = x.mean_dim(0, false, Kind::Double);
    let c = x - mean.unsqueeze(0);
    (mean, c.tr().matmul(&c) / n)
}

/// `||a − b||_F / ||b||_F`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let num = f64::try_from((a - b).square().sum(Kind::Double).sqrt()).unwrap();
    let den = f64::try_from(b.square().sum(Kind::Double).sqrt()).unwrap();
    num / den
}

/// `max |a − b|`.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// Standard normals `[n, d]` whitened so that their sample mean is exactly 0 and their sample covariance
/// exactly I. A deterministic sampler that is affine in its initial noise (DDIM with a Gaussian denoiser) then
/// maps them to samples whose moments are exactly those of the sampler's output law: no Monte-Carlo error.
pub fn whitened_noise(n: i64, d: i64, seed: u64) -> Tensor {
    let z = randn(&[n, d], seed);
    let (mean, cov) = moments(&z);
    let l = cov.linalg_cholesky(false);
    let centred = z - mean.unsqueeze(0);
    // z L⁻ᵀ: solve L w = centredᵀ.
    let w = Tensor::linalg_solve_triangular(&l, &centred.tr(), false, true, false);
    w.tr().contiguous()
}

/// The mean error in units of the spread: `||m̂ − m|| / sqrt(tr C)` (its Monte-Carlo scale is `1/√N`).
pub fn standardized_mean_err(m_hat: &Tensor, m: &Tensor, c: &Tensor) -> f64 {
    let num = f64::try_from((m_hat - m).square().sum(Kind::Double).sqrt()).unwrap();
    num / f64::try_from(c.trace()).unwrap().sqrt()
}

/// [`exact_posterior_mean`] with a different noise level per sample.
pub fn exact_posterior_mean_per_sample(
    prior: &GaussianDenoiser,
    a: &Tensor,
    x_t: &Tensor,
    y: &Tensor,
    sigmas: &[f64],
    sigma_y: f64,
) -> Tensor {
    let rows: Vec<Tensor> = sigmas
        .iter()
        .enumerate()
        .map(|(b, &s)| {
            let b = b as i64;
            exact_posterior_mean(
                prior,
                &a.narrow(0, b, 1),
                &x_t.narrow(0, b, 1),
                &y.narrow(0, b, 1),
                s,
                sigma_y,
            )
        })
        .collect();
    Tensor::cat(&rows, 0)
}

/// The Gaussian denoiser's Jacobian `J = I − σ² (Σ + σ² I)⁻¹` (dense, `[d, d]`).
pub fn gaussian_jacobian(prior: &GaussianDenoiser, sigma: f64) -> Tensor {
    let c = dense_cov(prior);
    let d = c.size()[0];
    let eye = Tensor::eye(d, F64);
    &eye - (&c + &eye * (sigma * sigma)).inverse() * (sigma * sigma)
}
