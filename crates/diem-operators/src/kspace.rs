//! Undersampled orthonormal 2-D Fourier transform, the accelerated-MRI operator of docs/method.md §9c.
//!
//! ```text
//! F(x)   = fftshift( FFT2_ortho( ifftshift(x) ) )     over (H, W), DC at index (H/2, W/2)
//! A x    = [ Re(mask ⊙ F(x)), Im(mask ⊙ F(x)) ]       stacked along the channel axis
//! Aᵀ u   = Re( F^H( mask ⊙ (u_re + i u_im) ) ),  F^H(k) = fftshift( IFFT2_ortho( ifftshift(k) ) )
//! ```
//!
//! The mask is a set of columns (horizontal frequencies, the W axis) shared by all rows. With a full mask
//! `AᵀA = I` (Parseval for real x); with a partial mask `AᵀA` is symmetric with spectrum in `[0, 1]`.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::operator::LinearOperator;
use crate::operator::{
    as_kind, check_float, check_input, check_x_shape, positive, select_rows, shape_tensor,
};
use crate::params::Params;

/// Column-masked orthonormal 2-D DFT: `x : [N, C, H, W]` (real) to `y : [N, 2C, H, W]`, channels
/// `0..C` the real parts and `C..2C` the imaginary parts. Column masks `mask : [P, W]` (binary).
#[derive(Debug)]
pub struct KSpace {
    mask: Tensor,
    x_shape: Vec<i64>,
}

impl Clone for KSpace {
    fn clone(&self) -> Self {
        Self { mask: self.mask.shallow_clone(), x_shape: self.x_shape.clone() }
    }
}

/// Keep probability and centre half-width of the line mask at acceleration `r` for width `w`
/// (docs/method.md §9c generalised from W = 320): `p = 200/(320R − 120) = 5/(8R − 3)` and the band
/// `[W/2 − c, W/2 + c)` with `c = ⌈3W/(16R)⌉` (`⌈60/R⌉` at W = 320). The expected kept count is `W/R`
/// when `c` needs no rounding.
pub fn line_mask_params(r: f64, w: i64) -> (f64, i64) {
    let p = 5.0 / (8.0 * r - 3.0);
    // Computed in integers where possible so that W = 320 reproduces ⌈60/R⌉ exactly.
    let c = ((3 * w) as f64 / (16.0 * r) - 1e-12).ceil() as i64;
    (p.min(1.0), c.clamp(0, w / 2))
}

impl KSpace {
    /// The operator on samples `x_shape = [C, H, W]` with column masks `mask : [P, W]` (float, 0 or 1).
    pub fn new(mask: Tensor, x_shape: &[i64]) -> Result<Self> {
        check_x_shape("KSpace", x_shape)?;
        if x_shape.len() != 3 {
            return Err(Error::Shape {
                op: "KSpace",
                what: "x_shape".into(),
                expected: "[C, H, W]".into(),
                got: x_shape.to_vec(),
            });
        }
        let size = mask.size();
        if size.len() != 2 || size[0] < 1 || size[1] != x_shape[2] {
            return Err(Error::Shape {
                op: "KSpace",
                what: "mask".into(),
                expected: format!("[P, {}]", x_shape[2]),
                got: size,
            });
        }
        check_float("KSpace", "mask", &mask)?;
        let binary = mask.eq(0.0).logical_or(&mask.eq(1.0)).all().int64_value(&[]) != 0;
        if !binary {
            return Err(Error::param("KSpace", "mask", "entries must be 0 or 1"));
        }
        Ok(Self { mask, x_shape: x_shape.to_vec() })
    }

    /// The fully sampled operator (an isometry) on `[C, H, W]`.
    pub fn full(x_shape: &[i64]) -> Result<Self> {
        let w = x_shape.get(2).copied().unwrap_or(1).max(1);
        Self::new(Tensor::ones([1, w], (Kind::Float, Device::Cpu)), x_shape)
    }

    /// `n` random line masks at acceleration `r ≥ 1` (docs/method.md §9c, after Jalal et al. 2021): each column is
    /// kept independently with probability `p`, then the centre band is forced in (see
    /// [`line_mask_params`]). Drawn from `StdRng::seed_from_u64(seed)`.
    pub fn random_lines(n: i64, x_shape: &[i64], r: f64, seed: u64) -> Result<Self> {
        let n = positive("KSpace::random_lines", "n", n)?;
        if !(r >= 1.0 && r.is_finite()) {
            return Err(Error::param(
                "KSpace::random_lines",
                "acceleration",
                format!("must be ≥ 1, got {r}"),
            ));
        }
        check_x_shape("KSpace::random_lines", x_shape)?;
        let w = *x_shape.last().unwrap_or(&1);
        let (p, c) = line_mask_params(r, w);
        let mut rng = crate::seed::host_rng(seed);
        let mut data = Vec::with_capacity((n * w) as usize);
        for _ in 0..n {
            for j in 0..w {
                let kept = rng.gen::<f64>() < p;
                let centre = (w / 2 - c..w / 2 + c).contains(&j);
                data.push(if kept || centre { 1.0f32 } else { 0.0 });
            }
        }
        Self::new(Tensor::from_slice(&data).reshape([n, w]), x_shape)
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`mask`, `x_shape`).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        Self::new(p.float("mask")?, &p.shape("x_shape")?)
    }

    /// The column masks `[P, W]`.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    fn mask4(&self, kind: Kind) -> Tensor {
        let m = as_kind(&self.mask, kind);
        let p = m.size()[0];
        m.reshape([p, 1, 1, -1])
    }
}

/// `F(x) = fftshift(FFT2_ortho(ifftshift(x)))` over the last two axes.
pub fn centered_fft2(x: &Tensor) -> Tensor {
    x.fft_ifftshift([-2i64, -1].as_slice())
        .fft_fft2(None::<&[i64]>, [-2i64, -1], "ortho")
        .fft_fftshift([-2i64, -1].as_slice())
}

/// `F^H(k) = fftshift(IFFT2_ortho(ifftshift(k)))` over the last two axes.
pub fn centered_ifft2(k: &Tensor) -> Tensor {
    k.fft_ifftshift([-2i64, -1].as_slice())
        .fft_ifft2(None::<&[i64]>, [-2i64, -1], "ortho")
        .fft_fftshift([-2i64, -1].as_slice())
}

impl LinearOperator for KSpace {
    fn kind(&self) -> String {
        "kspace".into()
    }
    fn batch(&self) -> i64 {
        self.mask.size()[0]
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        vec![2 * self.x_shape[0], self.x_shape[1], self.x_shape[2]]
    }
    fn device(&self) -> Device {
        self.mask.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        check_input("KSpace::apply", "x", x, &self.x_shape, self.batch());
        let k = centered_fft2(x) * self.mask4(x.kind());
        Tensor::cat(&[k.real(), k.imag()], 1)
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        check_input("KSpace::adjoint", "y", y, &self.y_shape(), self.batch());
        let c = self.x_shape[0];
        let m = self.mask4(y.kind());
        let k = Tensor::complex(&(y.narrow(1, 0, c) * &m), &(y.narrow(1, c, c) * &m));
        centered_ifft2(&k).real()
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self { mask: select_rows(&self.mask, indices), x_shape: self.x_shape.clone() })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self { mask: self.mask.to_device(device), x_shape: self.x_shape.clone() })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("mask".into(), self.mask.shallow_clone()), ("x_shape".into(), shape_tensor(&self.x_shape))]
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
