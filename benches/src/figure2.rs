//! The Figure 2 study (docs/method.md §10): how well does each covariance choice's moment-matched likelihood
//! `q(y | x_t) = N(y | W E[x | x_t], Σ_y + W V W ᵀ)` reproduce the exact noisy posterior `p(x_t | y)`?
//!
//! For every seed and noise level σ_t (docs/method.md §10.4–10.5):
//! 1. draw `x_t = x + σ_t z` for a pool of prior samples x, weight them by `q(y | x_t)` and resample
//!    (multinomial, with replacement) `v`, the approximate noisy posterior;
//! 2. draw `u1`, `u2` independently from the closed-form `p(x_t | y)` (docs/method.md §10.3);
//! 3. report `S = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)` with the Sinkhorn settings of docs/method.md §9a.
//!
//! `OT_λ(u1, u2)` does not depend on V, so it is computed once per (seed, σ_t) and shared by the four
//! choices; this equals [`Sinkhorn::two_sample_divergence`] called per choice.

use diem_metrics::{Sinkhorn, DIVERGENCE_FLOOR};
use diem_models::{Denoiser, MixtureDenoiser};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::mixture::{MixtureConfig, MixtureProblem};
use crate::random;

/// The covariance V used inside the moment-matched likelihood (docs/method.md §10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceChoice {
    /// `V = 0` (DPS-like).
    Zero,
    /// `V = σ_t² I`.
    CovT,
    /// `V = σ_t² I − σ_t⁴ (Σ_x + σ_t² I)^{-1}` with Σ_x the sample covariance of the prior pool.
    CovX,
    /// The exact Tweedie covariance `V = σ_t² I + σ_t⁴ ∇² ln p(x_t) = Cov[x | x_t]`.
    Hessian,
}

impl CovarianceChoice {
    /// The four choices in the reference's order.
    pub const ALL: [Self; 4] = [Self::Zero, Self::CovT, Self::CovX, Self::Hessian];

    /// The reference's name (`zero`, `cov_t`, `cov_x`, `hessian`), used in the CSV files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::CovT => "cov_t",
            Self::CovX => "cov_x",
            Self::Hessian => "hessian",
        }
    }

    /// The figure's legend.
    pub fn legend(self) -> &'static str {
        match self {
            Self::Zero => "V = 0",
            Self::CovT => "V = Σ_t",
            Self::CovX => "V = (Σ_x⁻¹ + Σ_t⁻¹)⁻¹",
            Self::Hessian => "V = V[x | x_t] (Tweedie)",
        }
    }
}

/// The study's sizes (docs/method.md §10.1, §10.5). [`Figure2Config::full`] is the paper's; the [`Default`] is a
/// reduced version that runs in minutes on a small CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure2Config {
    /// The prior and observation model.
    pub problem: MixtureConfig,
    /// Noise levels σ_t.
    pub sigmas: Vec<f64>,
    /// Number of seeds (problems).
    pub seeds: u64,
    /// The first seed; seeds are `first_seed .. first_seed + seeds`.
    pub first_seed: u64,
    /// Size R of the prior pool that importance resampling draws from (2^20 in the paper).
    pub proposal_size: i64,
    /// Points per Sinkhorn sample set (16,384 in the paper).
    pub sinkhorn_points: i64,
    /// Sinkhorn iteration cap (1024 in docs/method.md §9a).
    pub sinkhorn_max_iter: usize,
    /// Rows per chunk when evaluating the Tweedie covariance of the pool (bounds memory).
    pub chunk: i64,
}

/// The noise levels of docs/method.md §10.5.
pub const SIGMAS: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

impl Default for Figure2Config {
    /// Reduced sizes for a small CPU: 4 seeds, a pool of 2^16 and 128-point Sinkhorn sets. Small Sinkhorn
    /// sets raise the floor that `OT_λ(u1, u2)` subtracts, so the smallest divergences read higher than with
    /// the paper's 16,384 points; the ordering of the covariance choices is what this preset shows.
    fn default() -> Self {
        Self {
            problem: MixtureConfig::default(),
            sigmas: SIGMAS.to_vec(),
            seeds: 4,
            first_seed: 0,
            proposal_size: 1 << 16,
            sinkhorn_points: 128,
            sinkhorn_max_iter: 1024,
            chunk: 1 << 14,
        }
    }
}

impl Figure2Config {
    /// The paper's sizes: 64 seeds, a pool of 2^20, 16,384-point Sinkhorn sets (GPU scale).
    pub fn full() -> Self {
        Self { seeds: 64, proposal_size: 1 << 20, sinkhorn_points: 16_384, ..Self::default() }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`BenchError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.problem.validate()?;
        if self.sigmas.is_empty() || self.sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(BenchError::config(
                "sigmas",
                format!("need finite values > 0, got {:?}", self.sigmas),
            ));
        }
        if self.seeds == 0 {
            return Err(BenchError::config("seeds", "must be ≥ 1"));
        }
        if self.proposal_size < 2 {
            return Err(BenchError::config(
                "proposal_size",
                format!("must be ≥ 2, got {}", self.proposal_size),
            ));
        }
        if self.sinkhorn_points < 2 {
            return Err(BenchError::config(
                "sinkhorn_points",
                format!("must be ≥ 2, got {}", self.sinkhorn_points),
            ));
        }
        if self.sinkhorn_max_iter == 0 {
            return Err(BenchError::config("sinkhorn_max_iter", "must be ≥ 1"));
        }
        if self.chunk < 1 {
            return Err(BenchError::config("chunk", format!("must be ≥ 1, got {}", self.chunk)));
        }
        Ok(())
    }

    /// The Sinkhorn solver of docs/method.md §9a with this configuration's iteration cap.
    pub fn sinkhorn(&self) -> Sinkhorn {
        Sinkhorn { max_iter: self.sinkhorn_max_iter, ..Sinkhorn::default() }
    }
}

/// One measured divergence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The problem's seed.
    pub seed: u64,
    /// The noise level σ_t.
    pub sigma_t: f64,
    /// The covariance choice.
    pub choice: CovarianceChoice,
    /// `S = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)`.
    pub divergence: f64,
    /// The effective sample size of the importance weights over the pool.
    pub ess: f64,
}

/// `ln N(r | 0, S)` up to the constant `−(p/2) ln 2π`, for residuals `r: [N, p]` and covariances `S: [p, p]`
/// (shared) or `[N, p, p]`; returns `[N]`.
///
/// # Errors
/// libtorch errors, e.g. when S is not positive definite.
pub fn gaussian_log_density(r: &Tensor, s: &Tensor) -> Result<Tensor> {
    let chol = s.f_linalg_cholesky(false)?;
    let (n, p) = (r.size()[0], r.size()[1]);
    let chol = if chol.dim() == 2 { chol.unsqueeze(0).expand([n, p, p], false) } else { chol };
    let a = chol.f_linalg_solve_triangular(&r.unsqueeze(-1), false, true, false)?;
    let quad = a.square().sum_dim_intlist([1, 2].as_slice(), false, Kind::Double);
    let logdet = chol.diagonal(0, -2, -1).log().sum_dim_intlist(-1, false, Kind::Double) * 2.0;
    Ok((quad + logdet) * -0.5)
}

/// The moment-matched log-likelihoods `ln q(y | x_t)` (constants dropped) of every row of `x_t: [R, n]` under
/// the four covariance choices, in [`CovarianceChoice::ALL`] order (docs/method.md §10.4). `sigma_x` is the prior
/// pool's covariance `[n, n]` used by `cov_x`.
///
/// # Errors
/// libtorch errors (non-positive-definite covariances).
pub fn approximate_log_weights(
    problem: &MixtureProblem,
    denoiser: &MixtureDenoiser,
    x_t: &Tensor,
    sigma_t: f64,
    sigma_x: &Tensor,
    chunk: i64,
) -> Result<[Tensor; 4]> {
    let (n, p) = (problem.config.ambient_dim, problem.config.obs_dim);
    let opts = (Kind::Double, tch::Device::Cpu);
    let s2 = sigma_t * sigma_t;
    let eye_n = Tensor::eye(n, opts);
    let cov_y = Tensor::eye(p, opts) * problem.config.sigma_y.powi(2);
    let w = &problem.w;
    let project = |v: &Tensor| w.matmul(v).matmul(&w.tr());
    let v_cov_x = &eye_n * s2 - (sigma_x + &eye_n * s2).inverse() * (s2 * s2);
    let shared = [cov_y.shallow_clone(), &cov_y + project(&(&eye_n * s2)), &cov_y + project(&v_cov_x)];
    let sigma = Tensor::from(sigma_t);
    let rows = x_t.size()[0];
    let mut parts: [Vec<Tensor>; 4] = Default::default();
    let mut start = 0;
    while start < rows {
        let len = chunk.min(rows - start);
        let x = x_t.narrow(0, start, len);
        let (e, v_hess) = tch::no_grad(|| (denoiser.denoise(&x, &sigma), denoiser.covariance(&x, &sigma)));
        let r = problem.y.unsqueeze(0) - e.matmul(&w.tr());
        for (k, s) in shared.iter().enumerate() {
            parts[k].push(gaussian_log_density(&r, s)?);
        }
        let s_hess = cov_y.unsqueeze(0) + w.unsqueeze(0).matmul(&v_hess).matmul(&w.tr().unsqueeze(0));
        parts[3].push(gaussian_log_density(&r, &s_hess)?);
        start += len;
    }
    Ok(parts.map(|p| Tensor::cat(&p, 0)))
}

/// The unbiased sample covariance of `x: [R, n]`, `[n, n]`.
pub fn sample_covariance(x: &Tensor) -> Tensor {
    let rows = x.size()[0];
    let centred = x - x.mean_dim(0, true, Kind::Double);
    centred.tr().matmul(&centred) / (rows - 1).max(1) as f64
}

/// Runs every σ_t and covariance choice for one seed, calling `on_record` as each divergence is measured.
///
/// # Errors
/// Configuration, libtorch, resampling or Sinkhorn errors.
pub fn run_seed(
    config: &Figure2Config,
    seed: u64,
    on_record: &mut dyn FnMut(&Record),
) -> Result<Vec<Record>> {
    config.validate()?;
    let problem = MixtureProblem::generate(&config.problem, seed)?;
    let denoiser = problem.denoiser()?;
    let posterior = problem.posterior();
    let sinkhorn = config.sinkhorn();
    let mut rng = random::stream(seed, 1);
    let pool = problem.sample_prior(&mut rng, config.proposal_size);
    let sigma_x = sample_covariance(&pool);
    let n_points = config.sinkhorn_points;
    let mut records = Vec::new();
    for (si, &sigma_t) in config.sigmas.iter().enumerate() {
        let mut rng = random::stream(seed, 100 + si as u64);
        let x_t = &pool + random::normal(&mut rng, &pool.size()) * sigma_t;
        let u1 = posterior.sample(&mut rng, n_points, sigma_t)?;
        let u2 = posterior.sample(&mut rng, n_points, sigma_t)?;
        let baseline = sinkhorn.ot(&u1, &u2)?.cost;
        let log_weights =
            approximate_log_weights(&problem, &denoiser, &x_t, sigma_t, &sigma_x, config.chunk)?;
        for (choice, logw) in CovarianceChoice::ALL.into_iter().zip(log_weights.iter()) {
            let idx = random::resample(&mut rng, logw, n_points, choice.name())?;
            let v = x_t.index_select(0, &idx);
            let against = sinkhorn.ot(&u1, &v)?.cost;
            let record = Record {
                seed,
                sigma_t,
                choice,
                divergence: (against - baseline).max(DIVERGENCE_FLOOR),
                ess: random::effective_sample_size(logw),
            };
            on_record(&record);
            records.push(record);
        }
    }
    Ok(records)
}

/// Runs every seed of the configuration.
///
/// # Errors
/// As [`run_seed`].
pub fn run(config: &Figure2Config, on_record: &mut dyn FnMut(&Record)) -> Result<Vec<Record>> {
    config.validate()?;
    let mut all = Vec::new();
    for k in 0..config.seeds {
        all.extend(run_seed(config, config.first_seed + k, on_record)?);
    }
    Ok(all)
}
