//! Masking operators `A_b = diag(m_b)` (docs/method.md §9b, §9d).
//!
//! A mask `m_b ∈ {0, 1}` deletes entries; it is self-adjoint (`Aᵀ = A`) and, being binary, idempotent
//! (`A A = A`). Per docs/method.md §1 the observation keeps the full shape: deleted entries of `y` hold pure noise.
//!
//! Generators draw from [`crate::seed::host_rng`] (`StdRng::seed_from_u64(seed)`) on the host, so the same
//! seed gives the same masks on every device.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::operator::{
    as_kind, check_float, check_input, check_x_shape, positive, select_rows, shape_tensor, LinearOperator,
};
use crate::params::Params;

/// `A_b x = m_b ⊙ x` with per-sample masks `m : [P, ..m_shape]`, `m_shape` broadcastable to `x_shape`
/// (each dimension equal or 1; an image mask `[P, 1, H, W]` is shared by the channels).
#[derive(Debug)]
pub struct Mask {
    mask: Tensor,
    x_shape: Vec<i64>,
}

impl Clone for Mask {
    fn clone(&self) -> Self {
        Self { mask: self.mask.shallow_clone(), x_shape: self.x_shape.clone() }
    }
}

/// The per-sample "pixel" shape of `x_shape`: the channel axis (the first, for rank ≥ 2) becomes 1.
fn pixel_shape(x_shape: &[i64]) -> Vec<i64> {
    let mut s = x_shape.to_vec();
    if s.len() >= 2 {
        s[0] = 1;
    }
    s
}

impl Mask {
    /// A mask operator from `mask : [P, ..m_shape]` (finite entries; binary for a true deletion mask) on
    /// samples of shape `x_shape`. `m_shape` has the rank of `x_shape`, each dimension equal or 1.
    pub fn new(mask: Tensor, x_shape: &[i64]) -> Result<Self> {
        check_x_shape("Mask", x_shape)?;
        let size = mask.size();
        let ok = size.len() == x_shape.len() + 1
            && size[0] >= 1
            && size[1..].iter().zip(x_shape).all(|(&m, &x)| m == x || m == 1);
        if !ok {
            return Err(Error::Shape {
                op: "Mask",
                what: "mask".into(),
                expected: format!("[P, ..] broadcastable to [P, {x_shape:?}] (each dimension equal or 1)"),
                got: size,
            });
        }
        check_float("Mask", "mask", &mask)?;
        Ok(Self { mask, x_shape: x_shape.to_vec() })
    }

    /// Random pixel deletion (docs/method.md §9b): each pixel of each of the `n` samples is kept if `U(0,1) > ρ`,
    /// i.e. deleted with probability `rho`; one draw per pixel, shared across channels (the first axis of
    /// an `x_shape` of rank ≥ 2). Mask shape `[n, 1, H, W]` for images.
    pub fn random_pixels(n: i64, x_shape: &[i64], rho: f64, seed: u64) -> Result<Self> {
        check_x_shape("Mask::random_pixels", x_shape)?;
        if !(0.0..=1.0).contains(&rho) {
            return Err(Error::param("Mask::random_pixels", "rho", format!("must lie in [0, 1], got {rho}")));
        }
        let n = positive("Mask::random_pixels", "n", n)?;
        let shape = pixel_shape(x_shape);
        let per: i64 = shape.iter().product();
        let mut rng = crate::seed::host_rng(seed);
        let data: Vec<f32> = (0..n * per).map(|_| if rng.gen::<f64>() > rho { 1.0 } else { 0.0 }).collect();
        let mut full = vec![n];
        full.extend(&shape);
        Self::new(Tensor::from_slice(&data).reshape(&full), x_shape)
    }

    /// Exactly `k` deleted pixels per sample, chosen uniformly without replacement, shared across channels
    /// (the FFHQ "random inpainting" task of docs/method.md §9d deletes `⌊0.98 · 65536⌋ = 64225` of 256² pixels).
    pub fn exact_deletions(n: i64, x_shape: &[i64], k: i64, seed: u64) -> Result<Self> {
        check_x_shape("Mask::exact_deletions", x_shape)?;
        let n = positive("Mask::exact_deletions", "n", n)?;
        let shape = pixel_shape(x_shape);
        let per: i64 = shape.iter().product();
        if !(0..=per).contains(&k) {
            return Err(Error::param(
                "Mask::exact_deletions",
                "k",
                format!("must lie in 0..={per}, got {k}"),
            ));
        }
        let mut rng = crate::seed::host_rng(seed);
        let mut data = vec![1.0f32; (n * per) as usize];
        for b in 0..n as usize {
            let row = &mut data[b * per as usize..(b + 1) * per as usize];
            for i in rand::seq::index::sample(&mut rng, per as usize, k as usize) {
                row[i] = 0.0;
            }
        }
        let mut full = vec![n];
        full.extend(&shape);
        Self::new(Tensor::from_slice(&data).reshape(&full), x_shape)
    }

    /// Box inpainting (docs/method.md §9d): one `box_h × box_w` rectangle of pixels deleted per sample, its
    /// top-left corner uniform in `[margin_h, H − box_h − margin_h) × [margin_w, W − box_w − margin_w)`
    /// (the FFHQ task: 128 × 128 in a 256 image with a 16-pixel margin, corner in `[16, 112)²`).
    /// `x_shape` is `[C, H, W]`; the mask `[n, 1, H, W]` is shared by the channels.
    pub fn random_box(
        n: i64,
        x_shape: &[i64],
        box_hw: (i64, i64),
        margin: (i64, i64),
        seed: u64,
    ) -> Result<Self> {
        check_x_shape("Mask::random_box", x_shape)?;
        if x_shape.len() != 3 {
            return Err(Error::Shape {
                op: "Mask::random_box",
                what: "x_shape".into(),
                expected: "[C, H, W]".into(),
                got: x_shape.to_vec(),
            });
        }
        let n = positive("Mask::random_box", "n", n)?;
        let (h, w) = (x_shape[1], x_shape[2]);
        let hi_h = h - box_hw.0 - margin.0;
        let hi_w = w - box_hw.1 - margin.1;
        if box_hw.0 < 1
            || box_hw.1 < 1
            || margin.0 < 0
            || margin.1 < 0
            || hi_h <= margin.0
            || hi_w <= margin.1
        {
            return Err(Error::param(
                "Mask::random_box",
                "box/margin",
                format!("box {box_hw:?} with margin {margin:?} does not fit in a {h}×{w} image"),
            ));
        }
        let mut rng = crate::seed::host_rng(seed);
        let mut data = vec![1.0f32; (n * h * w) as usize];
        for b in 0..n {
            let top = rng.gen_range(margin.0..hi_h);
            let left = rng.gen_range(margin.1..hi_w);
            for r in top..top + box_hw.0 {
                for c in left..left + box_hw.1 {
                    data[((b * h + r) * w + c) as usize] = 0.0;
                }
            }
        }
        Self::new(Tensor::from_slice(&data).reshape([n, 1, h, w]), x_shape)
    }

    /// Rebuilds from the parameter arrays written by [`LinearOperator::params`] (`mask`, `x_shape`).
    pub fn from_params(p: &Params<'_>) -> Result<Self> {
        Self::new(p.float("mask")?, &p.shape("x_shape")?)
    }

    /// The mask `[P, ..m_shape]`.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// Fraction of deleted (zero) mask entries over all samples.
    pub fn deleted_fraction(&self) -> f64 {
        self.mask.eq(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
    }
}

impl LinearOperator for Mask {
    fn kind(&self) -> String {
        "mask".into()
    }
    fn batch(&self) -> i64 {
        self.mask.size()[0]
    }
    fn x_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn y_shape(&self) -> Vec<i64> {
        self.x_shape.clone()
    }
    fn device(&self) -> Device {
        self.mask.device()
    }
    fn apply(&self, x: &Tensor) -> Tensor {
        check_input("Mask::apply", "x", x, &self.x_shape, self.batch());
        x * as_kind(&self.mask, x.kind())
    }
    fn adjoint(&self, y: &Tensor) -> Tensor {
        check_input("Mask::adjoint", "y", y, &self.x_shape, self.batch());
        y * as_kind(&self.mask, y.kind())
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
