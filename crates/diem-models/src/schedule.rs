//! Noise schedules of the variance-exploding (VE) SDE (docs/method.md §2).
//!
//! The forward process is `x_t = x + σ(t) z`, `z ~ N(0, I)`, `t ∈ [0, 1]`. A [`Schedule`] maps times to noise
//! levels; denoisers take σ, not t, so samplers and the trainer are the only users of the time axis.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Error, Result};

/// A noise schedule `t ↦ σ(t)` on `t ∈ [0, 1]`, increasing from `σ(0) = σ_min` to `σ(1) = σ_max`.
pub trait Schedule: std::fmt::Debug + Send {
    /// `σ(t)` elementwise; same shape and kind as `t`.
    fn sigma(&self, t: &Tensor) -> Tensor;
    /// `σ(t)` for one time.
    fn sigma_at(&self, t: f64) -> f64;
    /// The inverse map `σ ↦ t`.
    fn time_of(&self, sigma: f64) -> f64;
    /// `g(t)^2 = d σ(t)^2 / dt`, the squared diffusion coefficient of the forward SDE, for one time.
    fn g2_at(&self, t: f64) -> f64;
    /// `σ(0)`, the smallest noise level.
    fn sigma_min(&self) -> f64 {
        self.sigma_at(0.0)
    }
    /// `σ(1)`, the largest noise level.
    fn sigma_max(&self) -> f64 {
        self.sigma_at(1.0)
    }
}

/// The exponential VE schedule `σ(t) = exp(ln a + (ln b − ln a) t) = a^(1−t) b^t` (docs/method.md §2, paper eq. 28),
/// with `g(t)^2 = 2 (ln b − ln a) σ(t)^2`.
///
/// ```
/// use diem_models::{Schedule, VeSchedule};
/// let s = VeSchedule::new(1e-3, 1e2).unwrap();
/// assert!((s.sigma_at(0.0) - 1e-3).abs() < 1e-15 && (s.sigma_at(1.0) - 1e2).abs() < 1e-10);
/// assert!((s.time_of(s.sigma_at(0.3)) - 0.3).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeSchedule {
    /// `σ(0)`.
    pub a: f64,
    /// `σ(1)`.
    pub b: f64,
}

impl Default for VeSchedule {
    /// The class default `(a, b) = (1e-3, 1e2)` of the authors' code (also CIFAR and MRI).
    fn default() -> Self {
        Self { a: 1e-3, b: 1e2 }
    }
}

impl VeSchedule {
    /// A schedule from `σ(0) = a` to `σ(1) = b`.
    ///
    /// # Errors
    /// [`Error::Config`] unless `0 < a < b` and both are finite.
    pub fn new(a: f64, b: f64) -> Result<Self> {
        let s = Self { a, b };
        s.validate()?;
        Ok(s)
    }

    /// The manifold experiment's schedule `(1e-3, 1e1)` (docs/method.md §9a).
    pub fn manifold() -> Self {
        Self { a: 1e-3, b: 1e1 }
    }

    /// Checks `0 < a < b < ∞`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if !(self.a.is_finite() && self.a > 0.0) {
            return Err(Error::config("schedule.a", format!("must be finite and > 0, got {}", self.a)));
        }
        if !(self.b.is_finite() && self.b > self.a) {
            return Err(Error::config(
                "schedule.b",
                format!("must be finite and > a = {}, got {}", self.a, self.b),
            ));
        }
        Ok(())
    }

    fn log_ratio(&self) -> f64 {
        self.b.ln() - self.a.ln()
    }
}

impl Schedule for VeSchedule {
    fn sigma(&self, t: &Tensor) -> Tensor {
        (t * self.log_ratio() + self.a.ln()).exp()
    }

    fn sigma_at(&self, t: f64) -> f64 {
        (self.a.ln() + self.log_ratio() * t).exp()
    }

    fn time_of(&self, sigma: f64) -> f64 {
        (sigma.ln() - self.a.ln()) / self.log_ratio()
    }

    fn g2_at(&self, t: f64) -> f64 {
        2.0 * self.log_ratio() * self.sigma_at(t).powi(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn endpoints_inverse_and_diffusion_coefficient() {
        let s = VeSchedule::default();
        assert!((s.sigma_min() - 1e-3).abs() < 1e-15);
        assert!((s.sigma_max() - 1e2).abs() < 1e-10);
        // σ(t) = a^(1−t) b^t.
        for t in [0.0, 0.1, 0.5, 0.77, 1.0] {
            let direct = 1e-3_f64.powf(1.0 - t) * 1e2_f64.powf(t);
            assert!((s.sigma_at(t) - direct).abs() < 1e-12 * direct.max(1.0));
            assert!((s.time_of(s.sigma_at(t)) - t).abs() < 1e-12);
            // g² = dσ²/dt, checked by central differences.
            let h = 1e-6;
            let fd = (s.sigma_at(t + h).powi(2) - s.sigma_at(t - h).powi(2)) / (2.0 * h);
            assert!((s.g2_at(t) - fd).abs() < 1e-5 * fd.abs().max(1.0), "t={t}: {} vs {fd}", s.g2_at(t));
        }
        let t = Tensor::from_slice(&[0.0f64, 0.25, 1.0]).to_kind(Kind::Double).to_device(Device::Cpu);
        let sig = Vec::<f64>::try_from(s.sigma(&t)).unwrap();
        for (v, tt) in sig.iter().zip([0.0, 0.25, 1.0]) {
            assert!((v - s.sigma_at(tt)).abs() < 1e-12 * v.max(1.0));
        }
    }

    #[test]
    fn rejects_bad_bounds() {
        assert!(VeSchedule::new(0.0, 1.0).is_err());
        assert!(VeSchedule::new(1.0, 0.5).is_err());
        assert!(VeSchedule::new(1e-3, f64::INFINITY).is_err());
        assert_eq!(VeSchedule::manifold(), VeSchedule::new(1e-3, 10.0).unwrap());
    }
}
