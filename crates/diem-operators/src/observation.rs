//! Observations `y_i = A_i x_i + ε_i`, `ε_i ~ N(0, Σ_y)` (docs/method.md §1).

use std::path::Path;

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::noise::NoiseCov;
use crate::operator::LinearOperator;

/// A data set of observations: `y : [N, ..y_shape]`, the per-sample operators (`batch()` = N or 1) and the
/// noise covariance. `y` keeps the full output size of `A`, with noise on every entry, masked ones
/// included (docs/method.md §1).
#[derive(Debug)]
pub struct Observation {
    /// The observations `[N, ..y_shape]`.
    pub y: Tensor,
    /// The per-sample operators `A_i`.
    pub operator: Box<dyn LinearOperator>,
    /// The noise covariance `Σ_y`.
    pub noise: NoiseCov,
}

impl Clone for Observation {
    fn clone(&self) -> Self {
        Self { y: self.y.shallow_clone(), operator: self.operator.clone(), noise: self.noise.clone() }
    }
}

impl Observation {
    /// Bundles `y`, the operator and the noise after checking that they fit together: `y` is float,
    /// `[N, ..operator.y_shape()]` with `operator.batch()` ∈ {1, N}, and a diagonal `Σ_y` is
    /// `[1 or N, ..y_shape]`. The operator and noise are moved to `y`'s device.
    pub fn new(y: Tensor, operator: Box<dyn LinearOperator>, noise: NoiseCov) -> Result<Self> {
        let size = y.size();
        let y_shape = operator.y_shape();
        let ok = size.len() == y_shape.len() + 1
            && size[1..] == *y_shape
            && (operator.batch() == 1 || operator.batch() == size[0]);
        if !ok {
            return Err(Error::Shape {
                op: "Observation",
                what: format!("y (operator {})", operator.kind()),
                expected: format!(
                    "[N, {y_shape:?}] with N = {} (or any N for a shared operator)",
                    operator.batch()
                ),
                got: size,
            });
        }
        if !matches!(y.kind(), tch::Kind::Float | tch::Kind::Double) {
            return Err(Error::param(
                "Observation",
                "y",
                format!("dtype must be float32 or float64, got {}", crate::io::dtype_name(y.kind())),
            ));
        }
        noise.check(size[0], &y_shape)?;
        let device = y.device();
        let operator = if operator.device() == device { operator } else { operator.to_device(device) };
        Ok(Self { y, operator, noise: noise.to_device(device) })
    }

    /// Simulates `y = A x + ε` from clean data `x : [N, ..x_shape]` (docs/method.md §1): noise on every entry of
    /// `A x`, drawn from `StdRng::seed_from_u64(seed)` (see [`NoiseCov::sample`]). Runs without autograd.
    /// The operator is moved to `x`'s device.
    pub fn simulate(
        x: &Tensor,
        operator: Box<dyn LinearOperator>,
        noise: NoiseCov,
        seed: u64,
    ) -> Result<Self> {
        let size = x.size();
        let x_shape = operator.x_shape();
        let ok = size.len() == x_shape.len() + 1
            && size[1..] == *x_shape
            && (operator.batch() == 1 || operator.batch() == size[0]);
        if !ok {
            return Err(Error::Shape {
                op: "Observation::simulate",
                what: format!("x (operator {})", operator.kind()),
                expected: format!(
                    "[N, {x_shape:?}] with N = {} (or any N for a shared operator)",
                    operator.batch()
                ),
                got: size,
            });
        }
        if !matches!(x.kind(), tch::Kind::Float | tch::Kind::Double) {
            return Err(Error::param(
                "Observation::simulate",
                "x",
                format!("dtype must be float32 or float64, got {}", crate::io::dtype_name(x.kind())),
            ));
        }
        noise.check(size[0], &operator.y_shape())?;
        let operator =
            if operator.device() == x.device() { operator } else { operator.to_device(x.device()) };
        let _guard = tch::no_grad_guard();
        let ax = operator.apply(x);
        let eps = noise.sample(&ax.size(), ax.kind(), ax.device(), seed);
        Self::new(ax + eps, operator, noise)
    }

    /// Number of observations `N`.
    pub fn len(&self) -> i64 {
        self.y.size()[0]
    }

    /// Whether there are no observations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Observations `indices` (with their operators and noise rows).
    ///
    /// # Panics
    /// If an index is outside `0..len()`.
    pub fn select(&self, indices: &[i64]) -> Self {
        let n = self.len();
        assert!(
            indices.iter().all(|&i| (0..n).contains(&i)),
            "Observation::select: indices must lie in 0..{n}"
        );
        let index = Tensor::from_slice(indices).to_device(self.y.device());
        Self {
            y: self.y.index_select(0, &index),
            operator: self.operator.select(indices),
            noise: self.noise.select(indices),
        }
    }

    /// Observations `start..start + len` (E-step chunking).
    ///
    /// # Panics
    /// If the range is outside `0..len()`.
    pub fn narrow(&self, start: i64, len: i64) -> Self {
        let indices: Vec<i64> = (start..start + len).collect();
        self.select(&indices)
    }

    /// The observations that carry no information: those whose operator is zero (an all-zero mask, an empty
    /// k-space mask, a zero matrix), so that their `y_i` is pure noise. Found by applying every `A_i` to a
    /// seeded random probe (a linear map sends a Gaussian probe to 0 only if it is 0, with probability 1),
    /// in chunks of bounded memory. Returns the indices in increasing order (all of `0..N` for a shared zero
    /// operator).
    pub fn unobserved(&self) -> Vec<i64> {
        let _guard = tch::no_grad_guard();
        let n = self.len();
        let batch = self.operator.batch();
        let x_shape = self.operator.x_shape();
        let x_numel = self.operator.x_numel().max(1);
        let chunk = ((1i64 << 22) / x_numel).clamp(1, batch.max(1));
        let device = self.operator.device();
        let mut zero = Vec::new();
        let mut start = 0;
        while start < batch {
            let len = chunk.min(batch - start);
            let op = self.operator.narrow(start, len);
            let mut shape = vec![len];
            shape.extend(&x_shape);
            let probe =
                NoiseCov::Isotropic { std: 1.0 }.sample(&shape, tch::Kind::Double, device, start as u64);
            let seen = op.apply(&probe).reshape([len, -1]).ne(0.0).any_dim(1, false);
            let rows = seen.logical_not().nonzero().reshape([-1]).to_device(Device::Cpu);
            zero.extend(Vec::<i64>::try_from(&rows).unwrap_or_default().into_iter().map(|r| r + start));
            start += len;
        }
        if batch == 1 && !zero.is_empty() {
            return (0..n).collect();
        }
        zero
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            y: self.y.to_device(device),
            operator: self.operator.to_device(device),
            noise: self.noise.to_device(device),
        }
    }

    /// Writes the observation set to `path`: `.npz` or `.safetensors` by extension (see [`crate::io`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::save(self, path.as_ref())
    }

    /// Reads an observation set written by [`Observation::save`] (or by numpy, see [`crate::io`]) onto
    /// `device`, validating every field.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        crate::io::load(path.as_ref(), device)
    }
}
