//! The observation a posterior denoiser conditions on: `y = A x + ε`, `ε ~ N(0, Σ_y)` (docs/method.md §1).

use diem_operators::{LinearOperator, NoiseCov, Observation};
use tch::{Kind, Tensor};

use crate::error::{Result, SamplingError};

/// A borrowed operator, the observations `y : [N, ..y_shape]` and the noise covariance `Σ_y`, checked to fit
/// together. The operator holds one parameter set per sample (`batch() = N`) or one shared set (`batch() = 1`).
#[derive(Debug)]
pub struct Measurement<'a> {
    operator: &'a dyn LinearOperator,
    y: Tensor,
    noise: NoiseCov,
}

impl<'a> Measurement<'a> {
    /// Bundles `operator`, `y` and `noise`.
    ///
    /// # Errors
    /// [`SamplingError::Shape`] unless `y` is a float tensor `[N, ..operator.y_shape()]` with
    /// `operator.batch() ∈ {1, N}`; [`SamplingError::Operators`] when a diagonal `Σ_y` does not fit `y`.
    pub fn new(operator: &'a dyn LinearOperator, y: &Tensor, noise: NoiseCov) -> Result<Self> {
        check_y(operator, y)?;
        noise.check(y.size()[0], &operator.y_shape())?;
        Ok(Self { operator, y: y.detach(), noise })
    }

    /// The measurement of an [`Observation`] (already validated by its constructor).
    pub fn from_observation(obs: &'a Observation) -> Self {
        Self { operator: obs.operator.as_ref(), y: obs.y.detach(), noise: obs.noise.clone() }
    }

    /// The operator `A`.
    pub fn operator(&self) -> &'a dyn LinearOperator {
        self.operator
    }

    /// The observations `y`.
    pub fn y(&self) -> &Tensor {
        &self.y
    }

    /// The noise covariance `Σ_y`.
    pub fn noise(&self) -> &NoiseCov {
        &self.noise
    }

    /// The number of observations `N`.
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }

    /// Whether there are no observations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `y` in `kind` on `x`'s device.
    pub(crate) fn y_like(&self, x: &Tensor) -> Tensor {
        self.y.to_kind(x.kind()).to_device(x.device())
    }

    /// Checks that `x_t` is `[N, ..operator.x_shape()]` with this measurement's `N`.
    pub(crate) fn check_input(&self, op: &'static str, x_t: &Tensor) -> Result<()> {
        check_x(op, self.operator, self.len(), x_t)
    }

    /// Checks that every standard deviation of `Σ_y` is positive (needed where `Σ_y⁻¹` appears).
    pub(crate) fn require_positive_noise(&self, field: &'static str) -> Result<()> {
        let ok = match &self.noise {
            NoiseCov::Isotropic { std } => *std > 0.0,
            NoiseCov::Diagonal { std } => {
                std.numel() == 0 || std.min().to_kind(Kind::Double).double_value(&[]) > 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(SamplingError::config(field, "needs Σ_y⁻¹: every noise standard deviation must be > 0"))
        }
    }
}

/// Checks `y : [N, ..operator.y_shape()]` (float) with `operator.batch() ∈ {1, N}`.
pub(crate) fn check_y(operator: &dyn LinearOperator, y: &Tensor) -> Result<()> {
    let size = y.size();
    let y_shape = operator.y_shape();
    let ok = size.len() == y_shape.len() + 1
        && size[1..] == *y_shape
        && (operator.batch() == 1 || operator.batch() == size[0]);
    if !ok {
        return Err(SamplingError::shape(
            "Measurement",
            "y",
            format!(
                "[N, {y_shape:?}] with N = {} for operator {} (any N if shared)",
                operator.batch(),
                operator.kind()
            ),
            &size,
        ));
    }
    if !matches!(y.kind(), Kind::Float | Kind::Double) {
        return Err(SamplingError::config(
            "Measurement.y",
            format!("must be float32/float64, got {:?}", y.kind()),
        ));
    }
    Ok(())
}

/// Checks `x_t : [n, ..operator.x_shape()]`.
pub(crate) fn check_x(op: &'static str, operator: &dyn LinearOperator, n: i64, x_t: &Tensor) -> Result<()> {
    let size = x_t.size();
    let x_shape = operator.x_shape();
    if size.len() != x_shape.len() + 1 || size[0] != n || size[1..] != *x_shape {
        return Err(SamplingError::shape(
            op,
            "x_t",
            format!("[{n}, {x_shape:?}] (the observations' batch)"),
            &size,
        ));
    }
    Ok(())
}
