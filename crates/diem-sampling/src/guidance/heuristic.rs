//! Covariance heuristics for MMPS (docs/method.md §5.2).
//!
//! A heuristic replaces the Tweedie covariance `V = σ_t² J` **only inside the linear system**
//! `(Σ_y + A V Aᵀ) v = y − A x̂`; the returned mean is still `x̂ + σ_t² Jᵀ Aᵀ v` through the network's VJP
//! (docs/method.md §12.2 "Heuristics are covariance-only"). The authors' code writes them all through the Gaussian-prior covariance
//! `V(Σ_x) = σ² I − σ⁴ (Σ_x + σ² I)⁻¹ = (Σ_x⁻¹ + σ⁻² I)⁻¹`.

use diem_linalg::Dplr;
use tch::Tensor;

use crate::error::{Result, SamplingError};

/// A closed-form covariance `V` for the MMPS system (docs/method.md §5.2). With any of them the solver needs no network
/// VJP, so one MMPS call costs 1 forward and 1 VJP whatever the iteration count.
#[derive(Clone, Debug)]
pub enum CovHeuristic {
    /// `zeros`: `Σ_x = 0`, `V = 0`, so `v = Σ_y⁻¹ r` directly (no Krylov iterations; needs `Σ_y > 0`).
    Zeros,
    /// `cov_t`: `V = σ_t² I` exactly. The authors' code obtains it as `V(10⁶ I) = σ² − σ⁴/(10⁶ + σ²)`, which differs by
    /// `σ⁴/(10⁶ + σ²)` (≤ 1e-2 relative at σ = 100); the project uses the exact limit.
    CovT,
    /// `ones`: `Σ_x = I`, `V = σ_t²/(1 + σ_t²) I` (PiGDM's heuristic).
    Ones,
    /// `cov_x`: a given Gaussian covariance `Σ_x` (e.g. the PPCA fit), `V = σ² I − σ⁴ (Σ_x + σ² I)⁻¹`. With the
    /// exact [`GaussianDenoiser`](diem_models::GaussianDenoiser) of the same `Σ_x`, MMPS is exact.
    CovX(Dplr),
}

impl CovHeuristic {
    /// The reference's name: `"zeros"`, `"cov_t"`, `"ones"`, `"cov_x"`.
    pub fn name(&self) -> &'static str {
        match self {
            CovHeuristic::Zeros => "zeros",
            CovHeuristic::CovT => "cov_t",
            CovHeuristic::Ones => "ones",
            CovHeuristic::CovX(_) => "cov_x",
        }
    }

    /// Checks that a `cov_x` matrix is unbatched and of size `n` (the per-sample number of entries).
    pub(crate) fn validate(&self, n: i64) -> Result<()> {
        if let CovHeuristic::CovX(cov) = self {
            if cov.dim() != n || !cov.batch_shape().is_empty() {
                return Err(SamplingError::shape(
                    "CovHeuristic::CovX",
                    "Σ_x",
                    format!("an unbatched DPLR of size {n} (the per-sample size of x)"),
                    &[cov.batch_shape(), vec![cov.dim()]].concat(),
                ));
            }
        }
        Ok(())
    }

    /// The product `V w` for `w : [N, ...]` (x-space) and `σ²` broadcastable against `w` (docs/method.md §5.2).
    /// `Zeros` returns zeros.
    ///
    /// # Errors
    /// [`SamplingError::Linalg`] when `Σ_x + σ² I` cannot be solved.
    pub fn apply(&self, w: &Tensor, sigma_sq: &Tensor) -> Result<Tensor> {
        Ok(match self {
            CovHeuristic::Zeros => w.zeros_like(),
            CovHeuristic::CovT => w * sigma_sq,
            CovHeuristic::Ones => w * (sigma_sq / (sigma_sq + 1.0)),
            CovHeuristic::CovX(cov) => {
                let size = w.size();
                let n = size[0];
                let flat = w.reshape([n, -1]);
                let s2 = sigma_sq.reshape([-1, 1]);
                let noisy = cov.to_kind(w.kind()).to_device(w.device()).add_diag(&s2)?;
                let solved = noisy.f_solve(&flat)?;
                (&flat * &s2 - solved * s2.square()).reshape(size)
            }
        })
    }
}
