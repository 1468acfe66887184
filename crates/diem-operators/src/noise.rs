//! Gaussian observation noise `ε ~ N(0, Σ_y)` with `Σ_y = σ² I` or `diag(σ²)` (docs/method.md §1).
//!
//! Noise is drawn on the host from [`crate::seed::host_rng`] (standard normals in f64),
//! then cast and moved, so a seed gives the same noise on every device and dtype.

use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::operator::{as_kind, select_rows};

/// The noise covariance `Σ_y`, stored through standard deviations.
#[derive(Debug)]
pub enum NoiseCov {
    /// `Σ_y = std² I` (every experiment of docs/method.md: manifold 1e-2, CIFAR 1e-3, MRI 1e-2).
    Isotropic {
        /// The standard deviation `σ_y ≥ 0`.
        std: f64,
    },
    /// `Σ_y = diag(std²)` with per-entry deviations `std : [P, ..y_shape]`, `P` = 1 (shared) or `N`.
    Diagonal {
        /// The standard deviations (float, finite, ≥ 0).
        std: Tensor,
    },
}

impl Clone for NoiseCov {
    fn clone(&self) -> Self {
        match self {
            NoiseCov::Isotropic { std } => NoiseCov::Isotropic { std: *std },
            NoiseCov::Diagonal { std } => NoiseCov::Diagonal { std: std.shallow_clone() },
        }
    }
}

impl NoiseCov {
    /// `Σ_y = std² I`; `std` finite and ≥ 0.
    pub fn isotropic(std: f64) -> Result<Self> {
        if !(std >= 0.0 && std.is_finite()) {
            return Err(Error::param("NoiseCov", "std", format!("must be finite and ≥ 0, got {std}")));
        }
        Ok(NoiseCov::Isotropic { std })
    }

    /// `Σ_y = diag(std²)`; `std : [P, ..y_shape]` float, finite, ≥ 0.
    pub fn diagonal(std: Tensor) -> Result<Self> {
        if !matches!(std.kind(), Kind::Float | Kind::Double) {
            return Err(Error::param(
                "NoiseCov",
                "std",
                format!("dtype must be float32 or float64, got {}", crate::io::dtype_name(std.kind())),
            ));
        }
        if std.dim() < 1 || std.size()[0] < 1 {
            return Err(Error::param(
                "NoiseCov",
                "std",
                format!("must be [P, ..y_shape], got {:?}", std.size()),
            ));
        }
        let ok = std.numel() == 0
            || (std.isfinite().all().int64_value(&[]) != 0 && std.ge(0.0).all().int64_value(&[]) != 0);
        if !ok {
            return Err(Error::param("NoiseCov", "std", "entries must be finite and ≥ 0"));
        }
        Ok(NoiseCov::Diagonal { std })
    }

    /// Checks that this covariance fits observations `[n, ..y_shape]`.
    pub fn check(&self, n: i64, y_shape: &[i64]) -> Result<()> {
        if let NoiseCov::Diagonal { std } = self {
            let s = std.size();
            if s.len() != y_shape.len() + 1 || s[1..] != *y_shape || (s[0] != 1 && s[0] != n) {
                return Err(Error::Shape {
                    op: "NoiseCov",
                    what: "std".into(),
                    expected: format!("[1 or {n}, {y_shape:?}]"),
                    got: s,
                });
            }
        }
        Ok(())
    }

    /// A draw `ε ~ N(0, Σ_y)` of shape `shape = [N, ..y_shape]`, from `StdRng::seed_from_u64(seed)`.
    pub fn sample(&self, shape: &[i64], kind: Kind, device: Device, seed: u64) -> Tensor {
        let numel: i64 = shape.iter().product();
        let mut rng = crate::seed::host_rng(seed);
        let z: Vec<f64> = (0..numel).map(|_| StandardNormal.sample(&mut rng)).collect();
        let z = Tensor::from_slice(&z).reshape(shape).to_kind(kind).to_device(device);
        self.scale_std(&z)
    }

    /// `std ⊙ v` (`Σ_y^{1/2} v`).
    pub fn scale_std(&self, v: &Tensor) -> Tensor {
        match self {
            NoiseCov::Isotropic { std } => v * *std,
            NoiseCov::Diagonal { std } => v * as_kind(std, v.kind()).to_device(v.device()),
        }
    }

    /// `Σ_y v`.
    pub fn mul(&self, v: &Tensor) -> Tensor {
        self.scale_std(&self.scale_std(v))
    }

    /// `Σ_y^{-1} v` (infinite where a deviation is zero).
    pub fn solve(&self, v: &Tensor) -> Tensor {
        match self {
            NoiseCov::Isotropic { std } => v / (*std * *std),
            NoiseCov::Diagonal { std } => {
                let s = as_kind(std, v.kind()).to_device(v.device());
                v / (&s * &s)
            }
        }
    }

    /// The covariance for rows `indices` (a shared or isotropic covariance is returned as is).
    pub fn select(&self, indices: &[i64]) -> Self {
        match self {
            NoiseCov::Isotropic { std } => NoiseCov::Isotropic { std: *std },
            NoiseCov::Diagonal { std } => NoiseCov::Diagonal { std: select_rows(std, indices) },
        }
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        match self {
            NoiseCov::Isotropic { std } => NoiseCov::Isotropic { std: *std },
            NoiseCov::Diagonal { std } => NoiseCov::Diagonal { std: std.to_device(device) },
        }
    }

    /// The `noise_std` array written to files: a 0-d float64 array, or the per-entry deviations.
    pub fn std_array(&self) -> Tensor {
        match self {
            NoiseCov::Isotropic { std } => Tensor::from_slice(&[*std]).reshape([0i64; 0]),
            NoiseCov::Diagonal { std } => std.shallow_clone(),
        }
    }
}
