//! Fréchet Inception Distance between feature statistics (docs/method.md §9b "Evaluation").

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{MetricsError, Result};

/// Rows per chunk when accumulating the covariance, to bound memory for 50k × 2048 feature sets.
const CHUNK: i64 = 4096;

/// Mean and covariance (f64, on the CPU) of a feature set, for FID.
///
/// Saved and loaded as `.npz` with fields `mu` `[D]`, `sigma` `[D, D]` (f64) and `count` (i64 scalar), the
/// layout of pytorch-fid's statistics files plus the sample count; [`FeatureStats::load`] also reads
/// NumPy-written files (`np.savez`, `np.savez_compressed`), pytorch-fid files without `count` (then `count` is
/// 0) and f32 fields (converted to f64).
#[derive(Debug)]
pub struct FeatureStats {
    /// Feature mean `[D]`, f64.
    pub mean: Tensor,
    /// Unbiased feature covariance `[D, D]`, f64.
    pub cov: Tensor,
    /// Number of feature vectors the statistics were computed from (0 when unknown).
    pub count: i64,
}

impl Clone for FeatureStats {
    fn clone(&self) -> Self {
        Self { mean: self.mean.copy(), cov: self.cov.copy(), count: self.count }
    }
}

impl FeatureStats {
    /// Mean `μ = (1/N) Σ f_i` and unbiased covariance `Σ = (1/(N−1)) Σ (f_i − μ)(f_i − μ)ᵀ` of features
    /// `[N, D]` (any float kind or device), computed in f64 in row chunks, like torch-fidelity / pytorch-fid
    /// (`np.cov(rowvar=False)`). Needs N ≥ 2 and finite features.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let size = features.size();
        let &[n, d] = size.as_slice() else {
            return Err(MetricsError::Shape {
                metric: "fid",
                what: format!("features must be [N, D], got {size:?}"),
            });
        };
        if n < 2 {
            return Err(MetricsError::TooFewSamples { metric: "fid", needed: 2, got: n });
        }
        if d < 1 {
            return Err(MetricsError::Shape {
                metric: "fid",
                what: format!("features must have D ≥ 1, got {size:?}"),
            });
        }
        if !bool::try_from(features.f_isfinite()?.f_all()?)? {
            return Err(MetricsError::NonFinite { metric: "fid", input: "features" });
        }
        let device = features.device();
        let mut sum = Tensor::f_zeros([d], (Kind::Double, device))?;
        for start in (0..n).step_by(CHUNK as usize) {
            let rows = features.f_narrow(0, start, CHUNK.min(n - start))?.f_to_kind(Kind::Double)?;
            sum = sum.f_add(&rows.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?)?;
        }
        let mean = sum.f_div_scalar(n as f64)?;
        let mut scatter = Tensor::f_zeros([d, d], (Kind::Double, device))?;
        for start in (0..n).step_by(CHUNK as usize) {
            let rows = features.f_narrow(0, start, CHUNK.min(n - start))?.f_to_kind(Kind::Double)?;
            let centred = rows.f_sub(&mean)?;
            scatter = scatter.f_add(&centred.f_tr()?.f_matmul(&centred)?)?;
        }
        let cov = scatter.f_div_scalar((n - 1) as f64)?;
        Ok(Self { mean: mean.f_to_device(Device::Cpu)?, cov: cov.f_to_device(Device::Cpu)?, count: n })
    }

    /// Feature dimension D.
    pub fn dim(&self) -> i64 {
        self.mean.size().first().copied().unwrap_or(0)
    }

    /// Checks `mean [D]`, `cov [D, D]`, finite values.
    fn validate(&self, what: &str) -> Result<i64> {
        let (m, c) = (self.mean.size(), self.cov.size());
        if m.len() != 1 || c != [m[0], m[0]] || m[0] < 1 {
            return Err(MetricsError::Shape {
                metric: "fid",
                what: format!("{what}: expected mean [D] and cov [D, D] with D ≥ 1, got {m:?} and {c:?}"),
            });
        }
        for (t, input) in [(&self.mean, "mean"), (&self.cov, "cov")] {
            if !bool::try_from(t.f_isfinite()?.f_all()?)? {
                return Err(MetricsError::NonFinite { metric: "fid", input });
            }
        }
        Ok(m[0])
    }

    /// Writes the statistics to `path` as `.npz` (`mu`, `sigma` f64, `count` i64 scalar), atomically: to a
    /// temporary file in the same folder, then renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate("saving feature statistics")?;
        let mean = self.mean.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let cov = self.cov.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let count = Tensor::from(self.count);
        let mut failure = None;
        diem_fs::write_atomic_path(path, |tmp| {
            Tensor::write_npz(&[("mu", &mean), ("sigma", &cov), ("count", &count)], tmp).map_err(|e| {
                failure = Some(e.to_string());
                std::io::Error::other("the npz writer failed")
            })
        })
        .map_err(|source| match failure.take() {
            Some(e) => {
                MetricsError::StatsFile { path: path.to_path_buf(), reason: format!("cannot write: {e}") }
            }
            None => MetricsError::Io { path: path.to_path_buf(), source },
        })
    }

    /// Reads statistics written by [`FeatureStats::save`] (bit-exact) or by pytorch-fid (`mu`, `sigma`; f32 or
    /// f64). A missing, corrupt or incomplete file gives [`MetricsError::StatsFile`] naming the path.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let err = |reason: String| MetricsError::StatsFile { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(err("no such file".into()));
        }
        // tch's reader unwraps on some corrupt zip entries: keep that panic from reaching the caller.
        let read = std::panic::catch_unwind(|| Tensor::read_npz(path))
            .map_err(|_| err("not a readable .npz file: corrupt zip entry".into()))?;
        let fields = read.map_err(|e| err(format!("not a readable .npz file: {e}")))?;
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let float = |name: &str| -> Result<Tensor> {
            let t = field(name).ok_or_else(|| err(format!("missing field `{name}`")))?;
            match t.kind() {
                Kind::Double | Kind::Float | Kind::Half => Ok(t.f_to_kind(Kind::Double)?),
                k => Err(err(format!("field `{name}` has kind {k:?}, expected f64 or f32"))),
            }
        };
        let (mean, cov) = (float("mu")?, float("sigma")?);
        let count = match field("count") {
            None => 0,
            Some(t) if t.numel() == 1 && matches!(t.kind(), Kind::Int64 | Kind::Int) => {
                t.f_reshape([-1i64])?.f_int64_value(&[0])?
            }
            Some(t) => {
                return Err(err(format!(
                    "field `count` must be one integer, got {:?} {:?}",
                    t.kind(),
                    t.size()
                )))
            }
        };
        let stats = Self { mean, cov, count };
        stats.validate(&format!("{}", path.display())).map_err(|e| err(e.to_string()))?;
        Ok(stats)
    }
}

/// Fréchet distance between the Gaussians fitted to two feature sets (docs/method.md §9b, the FID):
///
/// ```text
/// FID = ||μ1 − μ2||² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^{1/2}),
/// tr((Σ1 Σ2)^{1/2}) = Σ_i sqrt(λ_i(Σ1^{1/2} Σ2 Σ1^{1/2})),
/// ```
///
/// where `Σ1^{1/2}` and the eigenvalues come from symmetric eigendecompositions in f64, with tiny negative
/// round-off eigenvalues clamped to 0 (pytorch-fid's `scipy.linalg.sqrtm` gives the same value for PSD
/// covariances). Symmetric in its arguments up to round-off.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    let da = a.validate("first statistics")?;
    let db = b.validate("second statistics")?;
    if da != db {
        return Err(MetricsError::Shape {
            metric: "fid",
            what: format!("feature dimensions differ: {da} and {db}"),
        });
    }
    let cpu = |t: &Tensor| -> Result<Tensor> { Ok(t.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?) };
    let (m1, s1, m2, s2) = (cpu(&a.mean)?, cpu(&a.cov)?, cpu(&b.mean)?, cpu(&b.cov)?);
    let mean_term = m1.f_sub(&m2)?.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let root1 = psd_sqrt(&s1)?;
    let inner = symmetric(&root1.f_matmul(&s2)?.f_matmul(&root1)?)?;
    let cross =
        inner.f_linalg_eigvalsh("L")?.f_clamp_min(0.0)?.f_sqrt()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let traces = s1.f_trace()?.f_double_value(&[])? + s2.f_trace()?.f_double_value(&[])?;
    Ok(mean_term + traces - 2.0 * cross)
}

fn symmetric(s: &Tensor) -> Result<Tensor> {
    Ok(s.f_add(&s.f_tr()?)?.f_mul_scalar(0.5)?)
}

/// Symmetric PSD square root through an eigendecomposition (negative round-off eigenvalues clamped to 0).
fn psd_sqrt(s: &Tensor) -> Result<Tensor> {
    let (vals, vecs) = symmetric(s)?.f_linalg_eigh("L")?;
    let root = vals.f_clamp_min(0.0)?.f_sqrt()?;
    Ok(vecs.f_mul(&root.f_unsqueeze(0)?)?.f_matmul(&vecs.f_tr()?)?)
}
