//! Separable down-sampling: average pooling and MATLAB-style antialiased bicubic (docs/method.md §9d).
//!
//! Both are `y = R x Cᵀ` per channel, with `R : [H/k, H]` acting on rows and `C : [W/k, W]` on columns,
//! so `Aᵀ u = Rᵀ u C` exactly. The matrices are shared by every sample (`batch() == 1`).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::operator::{as_kind, check_float, check_input, check_x_shape, shape_tensor, LinearOperator};
use crate::params::Params;

/// Which down-sampling matrix to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Average pooling over non-overlapping `k × k` blocks.
    Average,
    /// The bicubic "Resizer" of the FFHQ super-resolution task (antialiased, mirror boundary).
    Bicubic,
}

/// `y = R x Cᵀ` on samples `[C, H, W]` with `R : [h, H]`, `C : [w, W]`.
#[derive(Debug)]
pub struct Downsample {
    rows: Tensor,
    cols: Tensor,
    x_shape: Vec<i64>,
}

impl Clone for Downsample {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.shallow_clone(),
            cols: self.cols.shallow_clone(),
            x_shape: self.x_shape.clone(),
        }
    }
}

/// The MATLAB/Resizer bicubic kernel: `1.5|x|³ − 2.5|x|² + 1` on `|x| ≤ 1`,
/// `−0.5|x|³ + 2.5|x|² − 4|x| + 2` on `1 < |x| ≤ 2`, else 0.
pub fn cubic(x: f64) -> f64 {
    let a = x.abs();
    if a <= 1.0 {
        1.5 * a.powi(3) - 2.5 * a * a + 1.0
    } else if a <= 2.0 {
        -0.5 * a.powi(3) + 2.5 * a * a - 4.0 * a + 2.0
    } else {
        0.0
    }
}

/// The `[n/k, n]` matrix of one axis (row-major, f64).
///
/// Bicubic (docs/method.md §9d), with scale `s = 1/k` and 1-based output index `j`: centre
/// `u_j = j/s + (1 − 1/s)/2`, support `4/s + 2` input pixels starting at `⌊u_j − 2/s⌋ − 1` (0-based),
/// weights `s · cubic(s (u_j − i))` at 1-based input `i`, normalized to sum 1, and out-of-range indices
/// mirrored with the edge repeated (`0, 1, …, n−1, n−1, …, 0`, period `2n`). Average: `1/k` on each block.
pub fn resample_matrix(n: i64, k: i64, method: Resample) -> Vec<f64> {
    let out = n / k;
    let (nu, ou) = (n as usize, out as usize);
    let mut m = vec![0.0; ou * nu];
    match method {
        Resample::Average => {
            for j in 0..ou {
                for t in 0..k as usize {
                    m[j * nu + j * k as usize + t] = 1.0 / k as f64;
                }
            }
        }
        Resample::Bicubic => {
            let s = 1.0 / k as f64;
            let width = 4.0 / s;
            let expanded = width.ceil() as i64 + 2;
            for j in 0..ou {
                let u = (j + 1) as f64 / s + 0.5 * (1.0 - 1.0 / s);
                let left = (u - width / 2.0).floor() as i64;
                let fov: Vec<i64> = (0..expanded).map(|t| left + t - 1).collect();
                let w: Vec<f64> = fov.iter().map(|&i| s * cubic(s * (u - i as f64 - 1.0))).collect();
                let total: f64 = w.iter().sum();
                let total = if total == 0.0 { 1.0 } else { total };
                for (&i, &wi) in fov.iter().zip(&w) {
                    let p = i.rem_euclid(2 * n);
                    let src = if p < n { p } else { 2 * n - 1 - p };
                    m[j * nu + src as usize] += wi / total;
                }
            }
        }
    }
    m
}

impl Downsample {
    /// From explicit matrices `rows : [h, H]` and `cols : [w, W]` (float, finite) for samples `[C, H, W]`.
    pub fn new(rows: Tensor, cols: Tensor, x_shape: &[i64]) -> Result<Self> {
        check_x_shape("Downsample", x_shape)?;
        if x_shape.len() != 3 {
            return Err(Error::Shape {
                op: "Downsample",
                what: "x_shape".into(),
                expected: "[C, H, W]".into(),
                got: x_shape.to_vec(),
            });
        }
        for (name, t, n) in [("rows", &rows, x_shape[1]), ("cols", &cols, x_shape[2])] {
            let s = t.size();
            if s.len() != 2 || s[0] < 1 || s[1] != n {
                return Err(Error::Shape {
                    op: "Downsample",
                    what: name.into(),
                    expected: format!("[m, {n}] with m ≥ 1"),
                    got: s,
                });
            }
            check_float("Downsample", name, t)?;
        }
        Ok(Self { rows, cols, x_shape: x_shape.to_vec() })
    }

    /// Down-sampling by an integer factor `k` (dividing H and W) with the given method. Matrices are built
    /// in f64 and stored as f32.
    pub fn by_factor(x_shape: &[i64], k: i64, method: Resample) -> Result<Self> {
        check_x_shape("Downsample", x_shape)?;
        if x_shape.len() != 3 || k < 1 || x_shape[1] % k != 0 || x_shape[2] % k != 0 {
            return Err(Error::param(
                "Downsample",
                "factor",
                format!("{k} must be ≥ 1 and divide H and W of x_shape [C, H, W] = {x_shape:?}"),
            ));
        }
        let build = |n: i64| {
            let m: Vec<f32> = resample_matrix(n, k, method).into_iter().map(|v| v as f32).collect();
            Tensor::from_slice(&m).reshape([n / k, n])
        };
        Self::new(build(x_shape[1]), build(x_shape[2]), x_shape)
    }

    /// Average pooling by `k` (docs/method.md's generic down-sampling).
    pub fn average(x_shape: &[i64], k: i64) -> Result<Self> {
        Self::by_factor(x_shape, k, Resample::Average)
    }

    /// Antialiased bicubic down-sampling by `k` (4 in the FFHQ super-resolution task, docs/method.md §9d).
    pub fn bicubic(x_shape: &[i64], k: i64) -> Result<Self> {
        Self::by_factor(x_shape, k, Resample::Bicubic)
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`rows`, `cols`, `x_shape`).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        Self::new(p.float("rows")?, p.float("cols")?, &p.shape("x_shape")?)
    }

    /// The row matrix `[h, H]`.
    pub fn rows(&self) -> &Tensor {
        &self.rows
    }

    /// The column matrix `[w, W]`.
    pub fn cols(&self) -> &Tensor {
        &self.cols
    }

    fn mats(&self, kind: Kind) -> (Tensor, Tensor) {
        (as_kind(&self.rows, kind), as_kind(&self.cols, kind))
    }
}

impl LinearOperator for Downsample {
    fn kind(&self) -> String {
        "downsample".into()
    }
    fn batch(&self) -> i64 {
        1
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![self.x_shape[0], self.rows.size()[0], self.cols.size()[0]]
    }
    fn device(&self) -> Device {
        self.rows.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        check_input("Downsample::apply", "x", x, &self.x_shape, 1);
        let (r, c) = self.mats(x.kind());
        r.matmul(x).matmul(&c.tr())
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        check_input("Downsample::adjoint", "y", y, &self.y_shape(), 1);
        let (r, c) = self.mats(y.kind());
        r.tr().matmul(y).matmul(&c)
    }
    fn select(&self, _indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self {
            rows: self.rows.to_device(device),
            cols: self.cols.to_device(device),
            x_shape: self.x_shape.clone(),
        })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![
            ("rows".into(), self.rows.shallow_clone()),
            ("cols".into(), self.cols.shallow_clone()),
            ("x_shape".into(), shape_tensor(&self.x_shape)),
        ]
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
