//! Per-lap statistics that need no ground truth: sample moments, an observation-space check, and the
//! consistency of every E-step sample with its own observation ([`estep_consistency`]).
//!
//! The observation-space diagnostic re-simulates `ŷ_i = A_i x_i + ε_i` from the lap's samples (one per
//! observation, noise from a seed derived per observation; streamed in chunks) and compares the set `{ŷ_i}` with the observed `{y_i}`: if the
//! samples came from the true posteriors, both sets are draws from the same distribution of observations.

use diem_metrics::Sinkhorn;
use diem_operators::{NoiseCov, Observation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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

/// How E-step samples agree with their own observations ([`estep_consistency`]).
///
/// For sample `x_j` of observation `i = j mod N`, the residual-to-noise ratio is
///
/// ```text
/// r_j = ||Σ_y^{-1/2} (y_i − A_i x_j)||_2 / √m        (= ||y_i − A_i x_j|| / (σ_y √m) for Σ_y = σ_y² I)
/// ```
///
/// with `m` the number of entries of `y_i`; for an exact posterior sample `r_j² ≈ χ²_m / m`, about 1. Where a
/// noise deviation is zero, the residual is divided by the root-mean-square deviation instead. A row with
/// `r_j > 5` (or a non-finite entry) is inconsistent: no posterior sample of the observation model lies there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EStepConsistency {
    /// Rows checked (`kN`).
    pub rows: i64,
    /// Rows with a non-finite entry.
    pub nonfinite: i64,
    /// Finite rows with an entry of magnitude beyond `bound`.
    pub beyond_bound: i64,
    /// The bound on `|x|` the rows were checked against.
    pub bound: f64,
    /// Median of `r_j` over the finite rows.
    pub residual_ratio_median: f64,
    /// 99th percentile (nearest rank) of `r_j` over the finite rows.
    pub residual_ratio_p99: f64,
    /// Largest `r_j` over the finite rows.
    pub residual_ratio_max: f64,
    /// Rows with `r_j >` [`EStepConsistency::INCONSISTENT_RATIO`], non-finite rows included.
    pub inconsistent: i64,
    /// `inconsistent / rows`.
    pub inconsistent_fraction: f64,
    /// The largest `|x|` over every finite entry.
    pub max_abs: f64,
}

impl EStepConsistency {
    /// The residual-to-noise ratio above which a row counts as inconsistent with its observation.
    pub const INCONSISTENT_RATIO: f64 = 5.0;
    /// The fraction of inconsistent rows above which [`EStepConsistency::warning`] speaks (0.1 %).
    pub const WARN_FRACTION: f64 = 1e-3;

    /// The fields for `metrics.jsonl`, named `estep_*` (`estep_rows`, `estep_nonfinite`,
    /// `estep_beyond_bound`, `estep_bound`, `estep_residual_ratio_median`, `estep_residual_ratio_p99`,
    /// `estep_residual_ratio_max`, `estep_inconsistent`, `estep_inconsistent_fraction`, `estep_max_abs`);
    /// non-finite numbers are written as `null`.
    pub fn to_json(&self) -> Map<String, Value> {
        let num = |v: f64| if v.is_finite() { Value::from(v) } else { Value::Null };
        let mut m = Map::new();
        m.insert("estep_rows".into(), Value::from(self.rows));
        m.insert("estep_nonfinite".into(), Value::from(self.nonfinite));
        m.insert("estep_beyond_bound".into(), Value::from(self.beyond_bound));
        m.insert("estep_bound".into(), num(self.bound));
        m.insert("estep_residual_ratio_median".into(), num(self.residual_ratio_median));
        m.insert("estep_residual_ratio_p99".into(), num(self.residual_ratio_p99));
        m.insert("estep_residual_ratio_max".into(), num(self.residual_ratio_max));
        m.insert("estep_inconsistent".into(), Value::from(self.inconsistent));
        m.insert("estep_inconsistent_fraction".into(), num(self.inconsistent_fraction));
        m.insert("estep_max_abs".into(), num(self.max_abs));
        m
    }

    /// A one-line warning when more than [`EStepConsistency::WARN_FRACTION`] of the rows are inconsistent
    /// with their observations, or any row is non-finite or beyond the bound; `None` otherwise.
    pub fn warning(&self) -> Option<String> {
        let bad =
            self.inconsistent_fraction > Self::WARN_FRACTION || self.nonfinite > 0 || self.beyond_bound > 0;
        bad.then(|| {
            format!(
                "{} of {} posterior samples ({:.2} %) do not fit their observations (residual > {} noise \
                 levels; largest {:.3e}), {} are non-finite and {} lie beyond |x| = {}",
                self.inconsistent,
                self.rows,
                100.0 * self.inconsistent_fraction,
                Self::INCONSISTENT_RATIO,
                self.residual_ratio_max,
                self.nonfinite,
                self.beyond_bound,
                self.bound
            )
        })
    }

    /// A one-line summary for logs and command output.
    pub fn summary(&self) -> String {
        format!(
            "residual/noise median {:.3}, p99 {:.3}, max {:.3e}; {} of {} rows inconsistent (r > {}), {} \
             non-finite, {} beyond |x| = {}; largest |x| {:.3e}",
            self.residual_ratio_median,
            self.residual_ratio_p99,
            self.residual_ratio_max,
            self.inconsistent,
            self.rows,
            Self::INCONSISTENT_RATIO,
            self.nonfinite,
            self.beyond_bound,
            self.bound,
            self.max_abs
        )
    }
}

/// Rows per chunk of [`estep_consistency`].
pub const CONSISTENCY_CHUNK: i64 = 4096;

/// [`EStepConsistency`] of the E-step samples `samples: [kN, ..x_shape]` against `obs` (sample `j` belongs to
/// observation `j mod N`), with rows beyond `bound` in magnitude counted (e.g. ten times the data's range).
///
/// Chunked ([`CONSISTENCY_CHUNK`] rows at a time, each moved to the observations' device; sums in f64), so
/// the samples may live in host memory whatever their number; it keeps one `f64` per row for the
/// percentiles and costs one application of `A` per sample.
///
/// # Errors
/// [`EmError::Config`] for an empty observation set or sample set, samples whose row shape is not the
/// operator's input shape, or a bound that is not positive.
pub fn estep_consistency(obs: &Observation, samples: &Tensor, bound: f64) -> Result<EStepConsistency> {
    estep_consistency_chunked(obs, samples, bound, CONSISTENCY_CHUNK)
}

fn estep_consistency_chunked(
    obs: &Observation,
    samples: &Tensor,
    bound: f64,
    chunk: i64,
) -> Result<EStepConsistency> {
    let _guard = tch::no_grad_guard();
    let n = obs.len();
    let rows = samples.size().first().copied().unwrap_or(0);
    if n == 0 || rows == 0 {
        return Err(EmError::config("samples", "the consistency check needs observations and samples"));
    }
    let x_shape = obs.operator.x_shape();
    if samples.size()[1..] != x_shape[..] {
        return Err(EmError::config(
            "samples",
            format!("rows of shape {:?} do not fit the operator's input {x_shape:?}", &samples.size()[1..]),
        ));
    }
    if bound.is_nan() || bound <= 0.0 {
        return Err(EmError::config("bound", format!("must be positive, got {bound}")));
    }
    let device = obs.y.device();
    let std = obs.noise.std_array().to_kind(Kind::Double);
    let whitened = std.numel() == 0 || std.min().double_value(&[]) > 0.0;
    let rms_std = std.square().mean(Kind::Double).sqrt().double_value(&[]);
    let m = obs.y.numel() as f64 / n as f64;
    let (mut ratios, mut nonfinite, mut beyond, mut max_abs) =
        (Vec::with_capacity(rows as usize), 0, 0, 0.0f64);
    let mut start = 0;
    while start < rows {
        let len = chunk.max(1).min(rows - start);
        let indices: Vec<i64> = (start..start + len).map(|j| j % n).collect();
        let part = obs.select(&indices);
        let x = samples.narrow(0, start, len).to_device(device).to_kind(Kind::Double);
        let flat = x.reshape([len, -1]);
        let finite_row = flat.isfinite().all_dim(1, false);
        let row_max = flat.abs().nan_to_num(0.0, 0.0, 0.0).amax(&[1i64][..], false);
        let residual = part.y.to_kind(Kind::Double)
            - part.operator.apply(&x.to_kind(part.y.kind())).to_kind(Kind::Double);
        let sq = if whitened {
            (&residual * part.noise.solve(&residual)).reshape([len, -1]).sum_dim_intlist(
                1,
                false,
                Kind::Double,
            )
        } else {
            residual.square().reshape([len, -1]).sum_dim_intlist(1, false, Kind::Double) / (rms_std * rms_std)
        };
        let ratio = (sq / m).sqrt();
        let finite_row = Vec::<bool>::try_from(finite_row.to_device(Device::Cpu))?;
        let row_max = Vec::<f64>::try_from(row_max.to_device(Device::Cpu))?;
        let ratio = Vec::<f64>::try_from(ratio.to_device(Device::Cpu))?;
        for ((ok, mx), r) in finite_row.into_iter().zip(row_max).zip(ratio) {
            if ok && r.is_finite() {
                ratios.push(r);
                max_abs = max_abs.max(mx);
                beyond += i64::from(mx > bound);
            } else {
                nonfinite += 1;
            }
        }
        start += len;
    }
    ratios.sort_by(f64::total_cmp);
    let rank = |q: f64| -> f64 {
        if ratios.is_empty() {
            return f64::NAN;
        }
        let k = ((q * ratios.len() as f64).ceil() as usize).clamp(1, ratios.len());
        ratios[k - 1]
    };
    let over = ratios.iter().filter(|r| **r > EStepConsistency::INCONSISTENT_RATIO).count() as i64;
    let inconsistent = over + nonfinite;
    Ok(EStepConsistency {
        rows,
        nonfinite,
        beyond_bound: beyond,
        bound,
        residual_ratio_median: rank(0.5),
        residual_ratio_p99: rank(0.99),
        residual_ratio_max: ratios.last().copied().unwrap_or(f64::NAN),
        inconsistent,
        inconsistent_fraction: inconsistent as f64 / rows as f64,
        max_abs,
    })
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

    #[test]
    fn consistency_of_true_latents_and_of_broken_rows() {
        let (obs, x) = problem();
        let c = estep_consistency(&obs, &x, 100.0).unwrap();
        assert_eq!((c.rows, c.nonfinite, c.beyond_bound), (40, 0, 0));
        // True latents: r² ~ χ²_m / m with m = 12 entries per observation.
        assert!((0.6..1.4).contains(&c.residual_ratio_median), "{c:?}");
        assert!(c.residual_ratio_max < 3.0 && c.inconsistent == 0, "{c:?}");
        assert!(c.warning().is_none());
        // Two samples per observation (j mod N), one row made non-finite and one pushed far off: the far row
        // is beyond the bound and inconsistent (it is off in observed entries too).
        let twice = Tensor::cat(&[&x, &x], 0);
        let _ = twice.get(41).fill_(f64::NAN);
        let _ = twice.get(77).fill_(1e3);
        for chunk in [1, 7, 80, 4096] {
            let c = estep_consistency_chunked(&obs, &twice, 100.0, chunk).unwrap();
            assert_eq!((c.rows, c.nonfinite, c.beyond_bound, c.inconsistent), (80, 1, 1, 2), "chunk {chunk}");
            assert!((c.max_abs - 1e3).abs() < 1e-9 && c.residual_ratio_max > 1e3, "{c:?}");
            assert!((c.inconsistent_fraction - 2.0 / 80.0).abs() < 1e-15);
            assert!(c.warning().is_some_and(|w| w.contains("2 of 80")));
        }
        let json = estep_consistency(&obs, &twice, 100.0).unwrap().to_json();
        for key in [
            "estep_rows",
            "estep_nonfinite",
            "estep_residual_ratio_median",
            "estep_residual_ratio_p99",
            "estep_residual_ratio_max",
            "estep_inconsistent_fraction",
            "estep_max_abs",
            "estep_beyond_bound",
        ] {
            assert!(json.get(key).is_some_and(|v| v.is_number()), "{key}: {json:?}");
        }
        assert!(estep_consistency(&obs, &x.narrow(0, 0, 0), 1.0).is_err());
        assert!(estep_consistency(&obs, &x, 0.0).is_err());
        assert!(estep_consistency(&obs, &x.reshape([40, 12]), 1.0).is_err());
    }
}
