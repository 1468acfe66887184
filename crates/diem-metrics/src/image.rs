//! Image-quality metrics on batches `[N, C, H, W]` (docs/method.md §9d): PSNR and SSIM, one value per image.

use tch::{Kind, Tensor};

use crate::error::{MetricsError, Result};

fn check_images(metric: &'static str, x: &Tensor, y: &Tensor, data_range: f64) -> Result<()> {
    let size = x.size();
    if size.len() != 4 || y.size() != size {
        return Err(MetricsError::Shape {
            metric,
            what: format!(
                "expected two [N, C, H, W] batches of equal shape, got {:?} and {:?}",
                size,
                y.size()
            ),
        });
    }
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(MetricsError::Parameter {
            metric,
            name: "data_range",
            value: data_range,
            expected: "a finite value > 0",
        });
    }
    Ok(())
}

/// Peak signal-to-noise ratio per image: `10 log10( R² / mean((x − y)²) )` with data range R, in dB.
///
/// Identical images give `+inf`. Returns a `[N]` f64 tensor.
pub fn psnr(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor> {
    check_images("psnr", x, y, data_range)?;
    let diff = x.f_to_kind(Kind::Double)?.f_sub(&y.f_to_kind(Kind::Double)?)?;
    let mse = diff.f_square()?.f_mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)?;
    Ok(mse.f_reciprocal()?.f_mul_scalar(data_range * data_range)?.f_log10()?.f_mul_scalar(10.0)?)
}

/// Side of the SSIM Gaussian window.
pub const SSIM_WINDOW: i64 = 11;
/// Standard deviation of the SSIM Gaussian window, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;

/// Structural similarity per image (Wang et al. 2004), with an 11×11 Gaussian window of σ = 1.5 applied as a
/// valid (unpadded) filter to each channel, `K1 = 0.01`, `K2 = 0.03`, `C1 = (K1 R)²`, `C2 = (K2 R)²`:
///
/// ```text
/// SSIM = mean over channels and window positions of
///        (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
/// ```
///
/// Images must be at least 11×11. Returns a `[N]` f64 tensor.
pub fn ssim(x: &Tensor, y: &Tensor, data_range: f64) -> Result<Tensor> {
    check_images("ssim", x, y, data_range)?;
    let size = x.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    if h < SSIM_WINDOW || w < SSIM_WINDOW {
        return Err(MetricsError::Shape {
            metric: "ssim",
            what: format!("images must be at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {h}×{w}"),
        });
    }
    let opts = (Kind::Double, x.device());
    let x = x.f_to_kind(Kind::Double)?;
    let y = y.f_to_kind(Kind::Double)?.f_to_device(x.device())?;
    let half = (SSIM_WINDOW - 1) as f64 / 2.0;
    let g = Tensor::f_arange(SSIM_WINDOW, opts)?
        .f_sub_scalar(half)?
        .f_square()?
        .f_div_scalar(-2.0 * SSIM_SIGMA * SSIM_SIGMA)?
        .f_exp()?;
    let g = g.f_div(&g.f_sum(Kind::Double)?)?;
    let window =
        g.f_unsqueeze(1)?.f_matmul(&g.f_unsqueeze(0)?)?.f_expand([c, 1, SSIM_WINDOW, SSIM_WINDOW], false)?;
    let filter = |t: &Tensor| t.f_conv2d(&window, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    let (mu_x, mu_y) = (filter(&x)?, filter(&y)?);
    let sxx = filter(&x.f_square()?)?.f_sub(&mu_x.f_square()?)?;
    let syy = filter(&y.f_square()?)?.f_sub(&mu_y.f_square()?)?;
    let sxy = filter(&x.f_mul(&y)?)?.f_sub(&mu_x.f_mul(&mu_y)?)?;
    let c1 = (0.01 * data_range).powi(2);
    let c2 = (0.03 * data_range).powi(2);
    let num = mu_x
        .f_mul(&mu_y)?
        .f_mul_scalar(2.0)?
        .f_add_scalar(c1)?
        .f_mul(&sxy.f_mul_scalar(2.0)?.f_add_scalar(c2)?)?;
    let den = mu_x
        .f_square()?
        .f_add(&mu_y.f_square()?)?
        .f_add_scalar(c1)?
        .f_mul(&sxx.f_add(&syy)?.f_add_scalar(c2)?)?;
    Ok(num.f_div(&den)?.f_mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)?)
}
