//! The identity operator `A = I` (the fully observed case).

use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::operator::{check_input, shape_tensor, LinearOperator};
use crate::params::Params;

/// `A x = x` on samples of shape `x_shape`; shared by any batch (`batch() == 1`).
#[derive(Debug, Clone)]
pub struct Identity {
    shape: Vec<i64>,
    device: Device,
}

impl Identity {
    /// The identity on samples of shape `shape` (every dimension ≥ 1).
    pub fn new(shape: &[i64]) -> Result<Self> {
        if shape.iter().any(|&d| d < 1) {
            return Err(Error::Shape {
                op: "Identity",
                what: "shape".into(),
                expected: "positive dimensions".into(),
                got: shape.to_vec(),
            });
        }
        Ok(Self { shape: shape.to_vec(), device: Device::Cpu })
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`x_shape`).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        Self::new(&p.shape("x_shape")?)
    }
}

impl LinearOperator for Identity {
    fn kind(&self) -> String {
        "identity".into()
    }
    fn batch(&self) -> i64 {
        1
    }
    fn x_shape(&self) -> Vec<i64> {
        self.shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.shape.clone()
    }
    fn device(&self) -> Device {
        self.device
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        check_input("Identity::apply", "x", x, &self.shape, 1);
        x.shallow_clone()
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        check_input("Identity::adjoint", "y", y, &self.shape, 1);
        y.shallow_clone()
    }
    fn select(&self, _indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { shape: self.shape.clone(), device })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("x_shape".into(), shape_tensor(&self.shape))]
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
