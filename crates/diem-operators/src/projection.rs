//! Dense per-sample projections `A_b ∈ R^{m×d}` (the manifold experiment, docs/method.md §9a).

use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::operator::LinearOperator;
use crate::operator::{
    as_kind, check_float, check_input, check_x_shape, positive, select_rows, shape_tensor,
};
use crate::params::Params;

/// `y_b = A_b vec(x_b)` with per-sample matrices `A : [P, m, d]`, where `d = ∏ x_shape` and `vec` is the
/// row-major flattening of a sample; `y_shape = [m]`. The adjoint is `A_bᵀ u_b` reshaped to `x_shape`.
#[derive(Debug)]
pub struct Projection {
    matrix: Tensor,
    x_shape: Vec<i64>,
}

impl Clone for Projection {
    fn clone(&self) -> Self {
        Self { matrix: self.matrix.shallow_clone(), x_shape: self.x_shape.clone() }
    }
}

impl Projection {
    /// A projection from `matrix : [P, m, d]` (float, finite) acting on samples of shape `x_shape` with
    /// `∏ x_shape = d`.
    pub fn new(matrix: Tensor, x_shape: &[i64]) -> Result<Self> {
        check_x_shape("Projection", x_shape)?;
        let d: i64 = x_shape.iter().product();
        let size = matrix.size();
        if size.len() != 3 || size[0] < 1 || size[1] < 1 || size[2] != d {
            return Err(Error::Shape {
                op: "Projection",
                what: "matrix".into(),
                expected: format!("[P, m, {d}] with P, m ≥ 1"),
                got: size,
            });
        }
        check_float("Projection", "matrix", &matrix)?;
        Ok(Self { matrix, x_shape: x_shape.to_vec() })
    }

    /// `n` random `m × d` matrices whose rows are i.i.d. uniform on the unit sphere `S^{d−1}` (Gaussian
    /// rows normalized to unit norm, docs/method.md §9a: `m = 2`, `d = 5`). Drawn in f64 from
    /// `StdRng::seed_from_u64(seed)`, stored as f32.
    pub fn random_sphere(n: i64, m: i64, d: i64, seed: u64) -> Result<Self> {
        let n = positive("Projection::random_sphere", "n", n)?;
        let m = positive("Projection::random_sphere", "m", m)?;
        let d = positive("Projection::random_sphere", "d", d)?;
        let mut rng = crate::seed::host_rng(seed);
        let mut data = Vec::with_capacity((n * m * d) as usize);
        for _ in 0..n * m {
            let row: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            data.extend(row.iter().map(|v| (v / norm) as f32));
        }
        Self::new(Tensor::from_slice(&data).reshape([n, m, d]), &[d])
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`matrix`, `x_shape`).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        Self::new(p.float("matrix")?, &p.shape("x_shape")?)
    }

    /// The matrices `[P, m, d]`.
    pub fn matrix(&self) -> &Tensor {
        &self.matrix
    }
}

impl LinearOperator for Projection {
    fn kind(&self) -> String {
        "projection".into()
    }
    fn batch(&self) -> i64 {
        self.matrix.size()[0]
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![self.matrix.size()[1]]
    }
    fn device(&self) -> Device {
        self.matrix.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        let n = check_input("Projection::apply", "x", x, &self.x_shape, self.batch());
        let a = as_kind(&self.matrix, x.kind());
        a.matmul(&x.reshape([n, -1, 1])).squeeze_dim(-1)
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        let n = check_input("Projection::adjoint", "y", y, &self.y_shape(), self.batch());
        let a = as_kind(&self.matrix, y.kind());
        let mut shape = vec![n];
        shape.extend(&self.x_shape);
        a.transpose(-1, -2).matmul(&y.unsqueeze(-1)).reshape(&shape)
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self { matrix: select_rows(&self.matrix, indices), x_shape: self.x_shape.clone() })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { matrix: self.matrix.to_device(device), x_shape: self.x_shape.clone() })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("matrix".into(), self.matrix.shallow_clone()), ("x_shape".into(), shape_tensor(&self.x_shape))]
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
