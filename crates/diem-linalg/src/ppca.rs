//! Probabilistic PCA fit (docs/method.md §7.3; the authors' code; Tipping & Bishop 1999).
//!
//! Given samples `x_1..x_S ∈ R^N` and a rank r, fit `N(μ, diag(D·1) + U Uᵀ)`:
//!
//! 1. `μ = mean_s x_s`, `X = [x_s − μ]` (S × N).
//! 2. `C = Xᵀ X / S` (N × N, biased covariance) when S ≥ N, else the Gram matrix `C = X Xᵀ / S` (S × S).
//! 3. Top r eigenpairs `(L_k, Q_k)` of C: exact symmetric eigendecomposition, or randomized subspace iteration
//!    (`Ω` Gaussian, `Q = qr(C^{q+1} Ω)` with re-orthonormalization at every power, then Rayleigh–Ritz on
//!    `Qᵀ C Q`), which only applies C through X and never forms it.
//! 4. Gram case: `Q ← Xᵀ Q`, each column normalized to unit norm.
//! 5. `D = (trace(C) − Σ_k L_k) / (N − r)` if r < N, else `D = 1e-6`.
//! 6. `U = Q diag(√max(L − D, 0))`, `Σ = DPLR(D·1_N, U, Uᵀ)`.
//!
//! # References
//! Tipping, M. E. and Bishop, C. M. (1999). Probabilistic principal component analysis. JRSS B 61(3).
//! Halko, N., Martinsson, P.-G. and Tropp, J. A. (2011). Finding structure with randomness. SIAM Review 53(2).

use crate::dplr::Dplr;
use crate::error::{LinalgError, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Kind, Tensor};

/// Which eigensolver the PPCA fit uses for the top-r eigenpairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PpcaMethod {
    /// Exact when `dim(C) ≤ 1024` or `r ≥ dim(C)/5` (the authors' code's rule, with a size cap), subspace iteration
    /// otherwise.
    Auto,
    /// Full symmetric eigendecomposition of C (`torch.linalg.eigh`).
    Exact,
    /// Randomized subspace iteration with `oversample` extra columns and `iterations` power steps.
    Subspace {
        /// Power iterations after the first range sketch.
        iterations: usize,
        /// Extra columns beyond r in the sketch.
        oversample: usize,
    },
}

/// Which matrix the eigenpairs are taken from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PpcaPath {
    /// The covariance when S ≥ N, the Gram matrix otherwise (docs/method.md §7.3).
    #[default]
    Auto,
    /// Always the N × N covariance `Xᵀ X / S`.
    Covariance,
    /// Always the S × S Gram matrix `X Xᵀ / S` (needs `r ≤ S`).
    Gram,
}

/// Parameters of [`ppca_with`].
#[derive(Clone, Debug, PartialEq)]
pub struct PpcaParams {
    /// Eigensolver choice.
    pub method: PpcaMethod,
    /// Covariance or Gram matrix.
    pub path: PpcaPath,
    /// Seed of the Gaussian sketch (subspace iteration only).
    pub seed: u64,
    /// Floor of the residual variance D: `1e-6` for r = N (docs/method.md §7.3) and a guard against a non-positive D
    /// from round-off or rank-deficient data otherwise.
    pub min_variance: f64,
}

impl Default for PpcaParams {
    fn default() -> Self {
        Self { method: PpcaMethod::Auto, path: PpcaPath::Auto, seed: 0, min_variance: 1e-6 }
    }
}

/// PPCA fit with default parameters: `samples: [S, ...]` (flattened to `[S, N]`) → `(μ [N], Σ)`, where
/// `Σ = DPLR(D·1_N, U, Uᵀ)` has rank `rank` (docs/method.md §7.3). Outputs have the dtype of `samples`.
pub fn ppca(samples: &Tensor, rank: usize) -> Result<(Tensor, Dplr)> {
    ppca_with(samples, rank, &PpcaParams::default())
}

/// The symmetric operator `C M` for `M: [dim(C), k]`, applied through X without forming C.
fn apply_c(xc: &Tensor, gram: bool, m: &Tensor) -> Tensor {
    let s = xc.size()[0] as f64;
    if gram {
        xc.matmul(&xc.transpose(0, 1).matmul(m)) / s
    } else {
        xc.transpose(0, 1).matmul(&xc.matmul(m)) / s
    }
}

/// Top-`r` eigenpairs (descending) of C by randomized subspace iteration.
fn top_eigen_subspace(
    xc: &Tensor,
    gram: bool,
    dim: i64,
    r: i64,
    iters: usize,
    over: usize,
    seed: u64,
) -> (Tensor, Tensor) {
    let k = (r + over as i64).min(dim);
    let mut rng = StdRng::seed_from_u64(seed);
    let omega: Vec<f64> = (0..dim * k).map(|_| StandardNormal.sample(&mut rng)).collect();
    let omega = Tensor::from_slice(&omega).reshape([dim, k]).to_device(xc.device());
    let (mut q, _) = Tensor::linalg_qr(&apply_c(xc, gram, &omega), "reduced");
    for _ in 0..iters {
        let (qn, _) = Tensor::linalg_qr(&apply_c(xc, gram, &q), "reduced");
        q = qn;
    }
    let b = q.transpose(0, 1).matmul(&apply_c(xc, gram, &q));
    let b = (&b + b.transpose(0, 1)) / 2.0;
    let (l, z) = b.linalg_eigh("L");
    let l = l.flip([0]).narrow(0, 0, r);
    let v = q.matmul(&z.flip([1]).narrow(1, 0, r));
    (l, v)
}

/// Top-`r` eigenpairs (descending) of C by a full symmetric eigendecomposition.
fn top_eigen_exact(xc: &Tensor, gram: bool, r: i64) -> (Tensor, Tensor) {
    let s = xc.size()[0] as f64;
    let c = if gram { xc.matmul(&xc.transpose(0, 1)) / s } else { xc.transpose(0, 1).matmul(xc) / s };
    let (l, q) = c.linalg_eigh("L");
    (l.flip([0]).narrow(0, 0, r), q.flip([1]).narrow(1, 0, r))
}

/// PPCA fit (docs/method.md §7.3) with explicit parameters; see the module docs for the steps.
///
/// `samples: [S, ...]` with S ≥ 1 (flattened to `[S, N]`); `rank ≤ N`, and `rank ≤ S` on the Gram path.
/// Returns `μ: [N]` and `Σ = DPLR(D·1_N, U, Uᵀ)` with `U: [N, rank]`, in the dtype of `samples` (the fit
/// itself runs in `f64`). The covariance is PSD by construction (D > 0, `U Uᵀ ⪰ 0`).
pub fn ppca_with(samples: &Tensor, rank: usize, params: &PpcaParams) -> Result<(Tensor, Dplr)> {
    const OP: &str = "ppca";
    if samples.dim() < 2 || samples.size()[0] < 1 {
        return Err(LinalgError::Shape {
            op: OP,
            arg: "samples",
            expected: "[S, ...] with S ≥ 1 and at least two dims".into(),
            got: samples.size(),
        });
    }
    if !samples.is_floating_point() {
        return Err(LinalgError::Mismatch {
            op: OP,
            message: format!("`samples` must be floating point, got {:?}", samples.kind()),
        });
    }
    if !(params.min_variance.is_finite() && params.min_variance > 0.0) {
        return Err(LinalgError::InvalidParameter {
            op: OP,
            name: "min_variance",
            value: params.min_variance.to_string(),
            expected: "a finite, positive number",
        });
    }
    let kind = samples.kind();
    let x = samples.to_kind(Kind::Double).flatten(1, -1);
    let (s, n) = (x.size()[0], x.size()[1]);
    let r = rank as i64;
    if r > n {
        return Err(LinalgError::InvalidParameter {
            op: OP,
            name: "rank",
            value: rank.to_string(),
            expected: "at most N, the flattened sample dimension",
        });
    }
    let gram = match params.path {
        PpcaPath::Auto => s < n,
        PpcaPath::Covariance => false,
        PpcaPath::Gram => true,
    };
    let dim = if gram { s } else { n };
    if r > dim {
        return Err(LinalgError::InvalidParameter {
            op: OP,
            name: "rank",
            value: rank.to_string(),
            expected: "at most S, the number of samples, on the Gram path",
        });
    }
    let mu = x.mean_dim(0, false, Kind::Double);
    let xc = &x - &mu;
    let trace = xc.square().sum(Kind::Double).double_value(&[]) / s as f64;
    let method = match params.method {
        PpcaMethod::Auto if dim <= 1024 || 5 * r >= dim => PpcaMethod::Exact,
        PpcaMethod::Auto => PpcaMethod::Subspace { iterations: 8, oversample: (rank / 2).max(10) },
        m => m,
    };
    let (l, mut q) = if r == 0 {
        let empty = Tensor::zeros([0], (Kind::Double, x.device()));
        (empty.shallow_clone(), Tensor::zeros([dim, 0], (Kind::Double, x.device())))
    } else {
        match method {
            PpcaMethod::Subspace { iterations, oversample } => {
                top_eigen_subspace(&xc, gram, dim, r, iterations, oversample, params.seed)
            }
            _ => top_eigen_exact(&xc, gram, r),
        }
    };
    if gram && r > 0 {
        q = xc.transpose(0, 1).matmul(&q);
        let norms = q.square().sum_dim_intlist(0, true, Kind::Double).sqrt();
        q /= norms.clamp_min(f64::MIN_POSITIVE.sqrt());
    }
    let l = l.clamp_min(0.0);
    let d = if r < n {
        let explained = l.sum(Kind::Double).double_value(&[]);
        ((trace - explained) / (n - r) as f64).max(params.min_variance)
    } else {
        params.min_variance
    };
    let u = q * (l - d).clamp_min(0.0).sqrt().unsqueeze(0);
    let dvec = Tensor::full([n], d, (Kind::Double, x.device()));
    let cov = Dplr::symmetric(dvec, u)?.to_kind(kind);
    Ok((mu.to_kind(kind), cov))
}
