//! Moment errors of a sample set against known moments (docs/method.md §12.1 item 7; issue 6's 2 % criterion).

use tch::{Kind, Tensor};

use crate::error::{check_points, MetricsError, Result};

/// The sample mean `[d]` and unbiased sample covariance `[d, d]` (divisor n − 1) of `samples: [n, d]`,
/// computed in f64.
pub fn sample_moments(samples: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, _) = check_points("sample_moments", "samples", samples)?;
    if n < 2 {
        return Err(MetricsError::Shape { metric: "sample_moments", what: "need at least 2 samples".into() });
    }
    let x = samples.f_to_kind(Kind::Double)?;
    let mean = x.f_mean_dim(0, false, Kind::Double)?;
    let centered = x.f_sub(&mean.f_unsqueeze(0)?)?;
    let cov = centered.f_tr()?.f_matmul(&centered)?.f_div_scalar((n - 1) as f64)?;
    Ok((mean, cov))
}

/// Relative error `||a − b|| / ||b||` in the Euclidean (vectors) or Frobenius (matrices) norm.
///
/// When `||b|| = 0` the absolute error `||a||` is returned.
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.size() != b.size() {
        return Err(MetricsError::Shape {
            metric: "relative_error",
            what: format!("shapes differ: {:?} vs {:?}", a.size(), b.size()),
        });
    }
    let a = a.f_to_kind(Kind::Double)?;
    let b = b.f_to_kind(Kind::Double)?.f_to_device(a.device())?;
    let diff = a.f_sub(&b)?.f_square()?.f_sum(Kind::Double)?.double_value(&[]).sqrt();
    let norm = b.f_square()?.f_sum(Kind::Double)?.double_value(&[]).sqrt();
    Ok(if norm > 0.0 { diff / norm } else { diff })
}

/// Relative errors of a sample set's mean and covariance against the given ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MomentErrors {
    /// `||mean(samples) − mean|| / ||mean||`.
    pub mean: f64,
    /// `||cov(samples) − cov||_F / ||cov||_F`.
    pub covariance: f64,
}

/// Compares the moments of `samples: [n, d]` with `mean: [d]` and `cov: [d, d]`.
pub fn moment_errors(samples: &Tensor, mean: &Tensor, cov: &Tensor) -> Result<MomentErrors> {
    let (m_hat, c_hat) = sample_moments(samples)?;
    Ok(MomentErrors { mean: relative_error(&m_hat, mean)?, covariance: relative_error(&c_hat, cov)? })
}
