//! Per-lap statistics that need no ground truth: sample moments and an observation-space check.
//!
//! The observation-space diagnostic re-simulates `ŷ_i = A_i x_i + ε_i` from the lap's samples (one per
//! observation, noise from a derived seed) and compares the set `{ŷ_i}` with the observed `{y_i}`: if the
//! samples came from the true posteriors, both sets are draws from the same distribution of observations.

use diem_metrics::Sinkhorn;
use diem_operators::Observation;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::Result;

/// Moments of a sample set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleStats {
    /// The number of samples.
    pub count: i64,
    /// The mean over every entry of every sample.
    pub mean: f64,
    /// The standard deviation over every entry of every sample.
    pub std: f64,
}

/// [`SampleStats`] of `samples: [S, ...]` (NaN moments when empty).
pub fn sample_stats(samples: &Tensor) -> SampleStats {
    let count = samples.size().first().copied().unwrap_or(0);
    if samples.numel() == 0 {
        return SampleStats { count, mean: f64::NAN, std: f64::NAN };
    }
    let x = samples.to_kind(Kind::Double);
    let mean = x.mean(Kind::Double).double_value(&[]);
    let std = if samples.numel() > 1 { x.std(false).double_value(&[]) } else { 0.0 };
    SampleStats { count, mean, std }
}

/// The observation-space diagnostic of one lap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObservationDiagnostic {
    /// `sqrt(mean_j (mean_i ŷ_ij − mean_i y_ij)²)`: RMS over observation entries of the difference of the
    /// per-entry means.
    pub mean_rms: f64,
    /// The same for the per-entry standard deviations.
    pub std_rms: f64,
    /// `sqrt(mean_ij (y_ij − (A_i x_i)_j)²)`: the residual of the samples against their own observation; for
    /// exact posterior samples it is of the order of the noise level.
    pub residual_rms: f64,
    /// `sqrt(mean_ij Σ_y,jj)`: the noise level the residual compares with.
    pub noise_rms: f64,
    /// The debiased Sinkhorn divergence between `{y_i}` and `{ŷ_i}` on a subsample (flattened), if computed.
    pub sinkhorn: Option<f64>,
}

/// Computes [`ObservationDiagnostic`] for `samples: [≥N, ..x_shape]` (the first N are used, sample `i` for
/// observation `i`); noise drawn with `seed`; Sinkhorn on the first `subsample` observations when given.
///
/// # Errors
/// [`crate::EmError::Metrics`] when the Sinkhorn solve fails.
pub fn observation_diagnostic(
    obs: &Observation,
    samples: &Tensor,
    seed: u64,
    subsample: Option<usize>,
) -> Result<ObservationDiagnostic> {
    let _guard = tch::no_grad_guard();
    let n = obs.len();
    let x = samples.narrow(0, 0, n).to_kind(Kind::Double).to_device(obs.y.device());
    let ax = obs.operator.apply(&x.to_kind(obs.y.kind())).to_kind(Kind::Double);
    let eps = obs.noise.sample(&ax.size(), Kind::Double, ax.device(), seed);
    let y = obs.y.to_kind(Kind::Double).reshape([n, -1]);
    let y_hat = (&ax + eps).reshape([n, -1]);
    let rms = |t: Tensor| t.square().mean(Kind::Double).sqrt().double_value(&[]);
    let mean_rms = rms(y_hat.mean_dim(0, false, Kind::Double) - y.mean_dim(0, false, Kind::Double));
    let (std_rms, residual_rms) = if n > 1 {
        (rms(y_hat.std_dim(0, false, false) - y.std_dim(0, false, false)), rms(&y - ax.reshape([n, -1])))
    } else {
        (0.0, rms(&y - ax.reshape([n, -1])))
    };
    let std = obs.noise.std_array().to_kind(Kind::Double);
    let noise_rms = std.square().mean(Kind::Double).sqrt().double_value(&[]);
    let sinkhorn = match subsample {
        Some(s) if s >= 2 && n >= 2 => {
            let m = (s as i64).min(n);
            let sk = Sinkhorn::default();
            Some(sk.divergence(&y.narrow(0, 0, m), &y_hat.narrow(0, 0, m))?)
        }
        _ => None,
    };
    Ok(ObservationDiagnostic { mean_rms, std_rms, residual_rms, noise_rms, sinkhorn })
}
