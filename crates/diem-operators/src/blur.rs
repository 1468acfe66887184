//! Per-sample blur (2-D correlation) with an explicit boundary convention (docs/method.md §9d, §12.1 item 1).
//!
//! For a kernel `k_b` of odd size `kh × kw`, with `ph = (kh − 1)/2`, `pw = (kw − 1)/2`:
//!
//! ```text
//! (A_b x)[c, i, j] = Σ_{u, v} k_b[u, v] · pad(x)[c, i + u, j + v]          (correlation, same size)
//! A_bᵀ = padᵀ ∘ conv_transpose(k_b)
//! ```
//!
//! The same kernel blurs every channel (depthwise). `pad` is a gather (see [`Boundary`]) whose adjoint
//! folds the padded border back onto the interior pixels it was copied from, so `Aᵀ` is exact for every
//! boundary, including the reflect padding of the FFHQ motion-deblur task (pad 30, kernel 61).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{gaussian_kernel, motion_kernel};
use crate::operator::LinearOperator;
use crate::operator::{
    as_kind, check_float, check_input, check_x_shape, positive, select_rows, shape_tensor,
};
use crate::padding::{pad2d, pad2d_adjoint, Boundary};
use crate::params::Params;

/// Depthwise "same" correlation `[N, C, H, W] → [N, C, H, W]` with per-sample kernels `[P, kh, kw]`.
#[derive(Debug)]
pub struct Blur {
    kernels: Tensor,
    x_shape: Vec<i64>,
    boundary: Boundary,
}

impl Clone for Blur {
    fn clone(&self) -> Self {
        Self { kernels: self.kernels.shallow_clone(), x_shape: self.x_shape.clone(), boundary: self.boundary }
    }
}

impl Blur {
    /// A blur of samples `x_shape = [C, H, W]` by `kernels : [P, kh, kw]` (odd sizes, finite) with the given
    /// boundary; the padding `(k − 1)/2` must fit the boundary (reflect: `≤ n − 1`).
    pub fn new(kernels: Tensor, x_shape: &[i64], boundary: Boundary) -> Result<Self> {
        check_x_shape("Blur", x_shape)?;
        if x_shape.len() != 3 {
            return Err(Error::Shape {
                op: "Blur",
                what: "x_shape".into(),
                expected: "[C, H, W]".into(),
                got: x_shape.to_vec(),
            });
        }
        let size = kernels.size();
        if size.len() != 3 || size[0] < 1 || size[1] % 2 == 0 || size[2] % 2 == 0 {
            return Err(Error::Shape {
                op: "Blur",
                what: "kernels".into(),
                expected: "[P, kh, kw] with odd kh, kw".into(),
                got: size,
            });
        }
        check_float("Blur", "kernels", &kernels)?;
        let (ph, pw) = ((size[1] - 1) / 2, (size[2] - 1) / 2);
        if ph > boundary.max_pad(x_shape[1]) || pw > boundary.max_pad(x_shape[2]) {
            return Err(Error::param(
                "Blur",
                "kernels",
                format!(
                    "padding ({ph}, {pw}) too large for a {}×{} image with {boundary:?}",
                    x_shape[1], x_shape[2]
                ),
            ));
        }
        Ok(Self { kernels, x_shape: x_shape.to_vec(), boundary })
    }

    /// One Gaussian kernel (`size` odd, `std > 0`) shared by every sample (`P = 1`).
    pub fn gaussian(x_shape: &[i64], size: i64, std: f64, boundary: Boundary) -> Result<Self> {
        let k = gaussian_kernel(size, std)?;
        let k: Vec<f32> = k.into_iter().map(|v| v as f32).collect();
        Self::new(Tensor::from_slice(&k).reshape([1, size, size]), x_shape, boundary)
    }

    /// `n` random motion-blur kernels (see [`motion_kernel`]) drawn from `StdRng::seed_from_u64(seed)`.
    /// The FFHQ task (docs/method.md §9d) uses one kernel (`n = 1`) of size 61, intensity 0.5, reflect boundary.
    pub fn random_motion(
        n: i64,
        x_shape: &[i64],
        size: i64,
        intensity: f64,
        boundary: Boundary,
        seed: u64,
    ) -> Result<Self> {
        let n = positive("Blur::random_motion", "n", n)?;
        let mut rng = crate::seed::host_rng(seed);
        let mut data = Vec::with_capacity((n * size * size).max(0) as usize);
        for _ in 0..n {
            data.extend(motion_kernel(size, intensity, &mut rng)?.into_iter().map(|v| v as f32));
        }
        Self::new(Tensor::from_slice(&data).reshape([n, size, size]), x_shape, boundary)
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`kernels`, `x_shape`,
    /// `boundary` as an int64 code, see [`Boundary::code`]).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        let code = p.int("boundary")?;
        let boundary = Boundary::from_code(code).ok_or_else(|| {
            Error::field(p.name("boundary"), format!("unknown boundary code {code} (0..=3)"))
        })?;
        Self::new(p.float("kernels")?, &p.shape("x_shape")?, boundary)
    }

    /// The kernels `[P, kh, kw]`.
    pub fn kernels(&self) -> &Tensor {
        &self.kernels
    }

    /// The boundary convention.
    pub fn boundary(&self) -> Boundary {
        self.boundary
    }

    /// Depthwise weights for `n` samples of `c` channels and the group count.
    fn weights(&self, n: i64, kind: Kind) -> (Tensor, i64) {
        let k = as_kind(&self.kernels, kind);
        let s = k.size();
        let c = self.x_shape[0];
        if s[0] == 1 {
            (k.reshape([1, 1, s[1], s[2]]), 1)
        } else {
            (k.unsqueeze(1).expand([s[0], c, s[1], s[2]], false).reshape([n * c, 1, s[1], s[2]]), n * c)
        }
    }

    fn pads(&self) -> (i64, i64) {
        let s = self.kernels.size();
        ((s[1] - 1) / 2, (s[2] - 1) / 2)
    }
}

impl LinearOperator for Blur {
    fn kind(&self) -> String {
        "blur".into()
    }
    fn batch(&self) -> i64 {
        self.kernels.size()[0]
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn device(&self) -> Device {
        self.kernels.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        let n = check_input("Blur::apply", "x", x, &self.x_shape, self.batch());
        let (c, h, w) = (self.x_shape[0], self.x_shape[1], self.x_shape[2]);
        let (ph, pw) = self.pads();
        let (weight, groups) = self.weights(n, x.kind());
        let xp = pad2d(x, ph, pw, self.boundary);
        let xp = if groups == 1 {
            xp.reshape([n * c, 1, h + 2 * ph, w + 2 * pw])
        } else {
            xp.reshape([1, n * c, h + 2 * ph, w + 2 * pw])
        };
        xp.conv2d(&weight, None::<Tensor>, [1, 1], [0, 0], [1, 1], groups).reshape([n, c, h, w])
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        let n = check_input("Blur::adjoint", "y", y, &self.x_shape, self.batch());
        let (c, h, w) = (self.x_shape[0], self.x_shape[1], self.x_shape[2]);
        let (ph, pw) = self.pads();
        let (weight, groups) = self.weights(n, y.kind());
        let yr = if groups == 1 { y.reshape([n * c, 1, h, w]) } else { y.reshape([1, n * c, h, w]) };
        let g = yr
            .conv_transpose2d(&weight, None::<Tensor>, [1, 1], [0, 0], [0, 0], groups, [1, 1])
            .reshape([n, c, h + 2 * ph, w + 2 * pw]);
        pad2d_adjoint(&g, h, w, ph, pw, self.boundary)
    }
    fn select(&self, indices: &[i64]) -> Box<dyn LinearOperator> {
        Box::new(Self {
            kernels: select_rows(&self.kernels, indices),
            x_shape: self.x_shape.clone(),
            boundary: self.boundary,
        })
    }
    fn to_device(&self, device: Device) -> Box<dyn LinearOperator> {
        Box::new(Self {
            kernels: self.kernels.to_device(device),
            x_shape: self.x_shape.clone(),
            boundary: self.boundary,
        })
    }
    fn params(&self) -> Vec<(String, Tensor)> {
        vec![
            ("kernels".into(), self.kernels.shallow_clone()),
            ("x_shape".into(), shape_tensor(&self.x_shape)),
            ("boundary".into(), Tensor::from_slice(&[self.boundary.code()])),
        ]
    }
    fn boxed_clone(&self) -> Box<dyn LinearOperator> {
        Box::new(self.clone())
    }
}
