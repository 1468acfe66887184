//! Per-lap statistics that need no ground truth: sample moments and an observation-space check.
//!
//! The observation-space diagnostic re-simulates `ŷ_i = A_i x_i + ε_i` from the lap's samples (one per
//! observation, noise from a seed derived per observation; streamed in chunks) and compares the set `{ŷ_i}` with the observed `{y_i}`: if the
//! samples came from the true posteriors, both sets are draws from the same distribution of observations.

use diem_metrics::Sinkhorn;
use diem_operators::{NoiseCov, Observation};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{EmError, Result};
use crate::seed::{derive_seed, SeedPurpose};

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

/// Observations per chunk of [`observation_diagnostic`]: memory stays bounded by a chunk whatever the data
/// set's size (at MRI paper scale the whole set in f64 would take hundreds of GB).
pub const DIAGNOSTIC_CHUNK: i64 = 256;

/// Computes [`ObservationDiagnostic`] for `samples: [≥N, ..x_shape]` (the first N are used, sample `i` for
/// observation `i`); Sinkhorn on the first `subsample` observations when given.
///
/// The noise of `ŷ_i` is drawn from a seed derived from `(seed, i)`, so the result does not depend on the
/// chunking. The observations are streamed in chunks of [`DIAGNOSTIC_CHUNK`] on the observations' device
/// (per-entry sums in f64), each chunk of samples moving there first.
///
/// # Errors
/// [`crate::EmError::Metrics`] when the Sinkhorn solve fails; [`crate::EmError::Config`] when there are fewer
/// samples than observations.
pub fn observation_diagnostic(
    obs: &Observation,
    samples: &Tensor,
    seed: u64,
    subsample: Option<usize>,
) -> Result<ObservationDiagnostic> {
    diagnostic_chunked(obs, samples, seed, subsample, DIAGNOSTIC_CHUNK)
}

/// Standard normals of shape `[len, ..row]` whose row `r` comes from the seed derived from `(seed, start + r)`.
fn row_normals(row: &[i64], start: i64, len: i64, seed: u64) -> Result<Tensor> {
    let unit = NoiseCov::isotropic(1.0).map_err(|e| EmError::config("diagnostics", e.to_string()))?;
    let mut shape = vec![1];
    shape.extend(row);
    let rows: Vec<Tensor> = (start..start + len)
        .map(|i| {
            unit.sample(
                &shape,
                Kind::Double,
                Device::Cpu,
                derive_seed(seed, SeedPurpose::Diagnostic, 0, i as u64),
            )
        })
        .collect();
    Ok(Tensor::cat(&rows, 0))
}

fn diagnostic_chunked(
    obs: &Observation,
    samples: &Tensor,
    seed: u64,
    subsample: Option<usize>,
    chunk: i64,
) -> Result<ObservationDiagnostic> {
    let _guard = tch::no_grad_guard();
    let n = obs.len();
    if samples.size().first().copied().unwrap_or(0) < n {
        return Err(EmError::config(
            "samples",
            format!("the diagnostic needs one sample per observation ({n}), got {:?}", samples.size()),
        ));
    }
    let device = obs.y.device();
    let head = match subsample {
        Some(s) if s >= 2 && n >= 2 => (s as i64).min(n),
        _ => 0,
    };
    let y_row = obs.y.size()[1..].to_vec();
    let mut sums: Option<[Tensor; 4]> = None; // Σ y, Σ y², Σ ŷ, Σ ŷ² per entry
    let mut residual_sq = 0.0;
    let (mut head_y, mut head_hat) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = chunk.max(1).min(n - start);
        let part = obs.narrow(start, len);
        let x = samples.narrow(0, start, len).to_device(device).to_kind(part.y.kind());
        let ax = part.operator.apply(&x).to_kind(Kind::Double).reshape([len, -1]);
        let z = row_normals(&y_row, start, len, seed)?.to_device(device);
        let eps = part.noise.scale_std(&z).reshape([len, -1]);
        let y = part.y.to_kind(Kind::Double).reshape([len, -1]);
        let y_hat = &ax + eps;
        residual_sq += (&y - &ax).square().sum(Kind::Double).double_value(&[]);
        let add = [
            y.sum_dim_intlist(0, false, Kind::Double),
            y.square().sum_dim_intlist(0, false, Kind::Double),
            y_hat.sum_dim_intlist(0, false, Kind::Double),
            y_hat.square().sum_dim_intlist(0, false, Kind::Double),
        ];
        sums = Some(match sums {
            None => add,
            Some([a, b, c, d]) => [a + &add[0], b + &add[1], c + &add[2], d + &add[3]],
        });
        if start < head {
            let take = (head - start).min(len);
            head_y.push(y.narrow(0, 0, take));
            head_hat.push(y_hat.narrow(0, 0, take));
        }
        start += len;
    }
    let [sy, sy2, sh, sh2] =
        sums.ok_or_else(|| EmError::config("observations", "the observation set is empty"))?;
    let nf = n as f64;
    let rms = |t: Tensor| t.square().mean(Kind::Double).sqrt().double_value(&[]);
    // Population moments per entry from the sums (f64; clamped at 0 against rounding).
    let std = |s: &Tensor, s2: &Tensor| (s2 / nf - (s / nf).square()).clamp_min(0.0).sqrt();
    let mean_rms = rms((&sh - &sy) / nf);
    let std_rms = if n > 1 { rms(std(&sh, &sh2) - std(&sy, &sy2)) } else { 0.0 };
    let residual_rms = (residual_sq / (nf * sy.numel() as f64)).sqrt();
    let noise_std = obs.noise.std_array().to_kind(Kind::Double);
    let noise_rms = noise_std.square().mean(Kind::Double).sqrt().double_value(&[]);
    let sinkhorn = if head >= 2 {
        let sk = Sinkhorn::default();
        Some(sk.divergence(&Tensor::cat(&head_y, 0), &Tensor::cat(&head_hat, 0))?)
    } else {
        None
    };
    Ok(ObservationDiagnostic { mean_rms, std_rms, residual_rms, noise_rms, sinkhorn })
}

#[cfg(test)]
mod tests {
    use diem_operators::{Mask, NoiseCov, Observation};
    use tch::{Device, Kind, Tensor};

    use super::*;

    /// 40 observations of 2×6 latents through random masks with noise 0.1, and the latents themselves.
    fn problem() -> (Observation, Tensor) {
        tch::manual_seed(3);
        let x = Tensor::randn([40, 2, 6], (Kind::Float, Device::Cpu));
        let op = Mask::random_pixels(40, &[2, 6], 0.5, 7).unwrap();
        let obs = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(0.1).unwrap(), 11).unwrap();
        (obs, x)
    }

    #[test]
    fn the_result_does_not_depend_on_the_chunking() {
        let (obs, x) = problem();
        let whole = diagnostic_chunked(&obs, &x, 5, Some(16), 1000).unwrap();
        for chunk in [1, 3, 16, 39] {
            let d = diagnostic_chunked(&obs, &x, 5, Some(16), chunk).unwrap();
            for (a, b) in [
                (d.mean_rms, whole.mean_rms),
                (d.std_rms, whole.std_rms),
                (d.residual_rms, whole.residual_rms),
                (d.noise_rms, whole.noise_rms),
                (d.sinkhorn.unwrap(), whole.sinkhorn.unwrap()),
            ] {
                assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "chunk {chunk}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn true_latents_leave_a_residual_at_the_noise_level() {
        let (obs, x) = problem();
        let d = observation_diagnostic(&obs, &x, 5, None).unwrap();
        assert!(d.sinkhorn.is_none());
        assert!((d.noise_rms - 0.1).abs() < 1e-12, "{d:?}");
        // Masked entries have y = 0 + noise and A x = 0 there as well, so the residual is pure noise.
        assert!((d.residual_rms - 0.1).abs() < 0.015, "{d:?}");
        // Re-simulated observations share the observed ones' per-entry moments up to sampling error.
        let wrong = observation_diagnostic(&obs, &(&x + 1.0), 5, None).unwrap();
        assert!(wrong.residual_rms > 5.0 * d.residual_rms, "{wrong:?} vs {d:?}");
        assert!(wrong.mean_rms > 5.0 * d.mean_rms, "{wrong:?} vs {d:?}");
    }

    #[test]
    fn too_few_samples_is_an_error() {
        let (obs, x) = problem();
        assert!(observation_diagnostic(&obs, &x.narrow(0, 0, 39), 5, None).is_err());
    }
}
