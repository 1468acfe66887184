//! Blur kernel generators: Gaussian and random motion blur (docs/method.md §9d).

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Beta, Distribution, Triangular};

use crate::error::{Error, Result};

/// A normalized `size × size` Gaussian kernel, `k(i, j) ∝ exp(−((i − c)² + (j − c)²) / (2 std²))` with
/// `c = (size − 1)/2`, row-major, summing to 1. `size` odd, `std > 0`.
pub fn gaussian_kernel(size: i64, std: f64) -> Result<Vec<f64>> {
    if size < 1 || size % 2 == 0 {
        return Err(Error::param("gaussian_kernel", "size", format!("must be odd and ≥ 1, got {size}")));
    }
    if !(std > 0.0 && std.is_finite()) {
        return Err(Error::param("gaussian_kernel", "std", format!("must be positive, got {std}")));
    }
    let c = (size - 1) as f64 / 2.0;
    let g: Vec<f64> = (0..size).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * std * std)).exp()).collect();
    let mut k = Vec::with_capacity((size * size) as usize);
    for a in &g {
        for b in &g {
            k.push(a * b);
        }
    }
    let s: f64 = k.iter().sum();
    Ok(k.into_iter().map(|v| v / s).collect())
}

/// A random motion-blur kernel of side `size` (odd) and intensity `intensity ∈ [0, 1]`, row-major, summing
/// to 1. Follows the "motionblur" generator of docs/method.md §9d:
///
/// 1. canvas `2s × 2s` with diagonal `Dg = √2 · 2s`; path length `L = 0.75 Dg (U(0,1) + U(0, I²))`;
/// 2. steps `Beta(1, 30)(1 − I + 0.1) Dg` drawn until their sum reaches `L` (longer ones rejected);
/// 3. `Θ ~ U(0, Iπ)`, `J ~ Beta(2, 20)`; first angle `U(−Θ, Θ)`, later `|angle| ~ Triangular(0, IΘ, Θ + 0.1)`
///    with the previous sign flipped with probability `J`;
/// 4. the path `Σ step·e^{i·angle}` is centred on its mean and rotated by `U(0, π)`.
///
/// Rasterization differs from PIL (docs/method.md §9d allows any similar kernel): the path is sampled every ¼ canvas
/// pixel, splatted bilinearly onto the `s × s` grid (canvas scale ½), and smoothed by a Gaussian of
/// standard deviation `max(0.5, ⌊0.01 Dg⌋/2)` kernel pixels (PIL's blur radius at the kernel's scale).
pub fn motion_kernel(size: i64, intensity: f64, rng: &mut StdRng) -> Result<Vec<f64>> {
    if size < 1 || size % 2 == 0 {
        return Err(Error::param("motion_kernel", "size", format!("must be odd and ≥ 1, got {size}")));
    }
    if !(0.0..=1.0).contains(&intensity) {
        return Err(Error::param(
            "motion_kernel",
            "intensity",
            format!("must lie in [0, 1], got {intensity}"),
        ));
    }
    let i2 = intensity * intensity;
    let dg = std::f64::consts::SQRT_2 * 2.0 * size as f64;
    let max_len = 0.75 * dg * (rng.gen::<f64>() + rng.gen::<f64>() * i2);
    let beta_step = Beta::new(1.0, 30.0).map_err(|e| Error::param("motion_kernel", "beta", e.to_string()))?;
    let mut steps: Vec<f64> = Vec::new();
    let mut total = 0.0;
    // Each accepted step is positive, so the loop ends; the cap only guards against absurd settings.
    while total < max_len && steps.len() < 100_000 {
        let step = beta_step.sample(rng) * (1.0 - intensity + 0.1) * dg;
        if step < max_len {
            total += step;
            steps.push(step);
        }
    }
    let theta = rng.gen::<f64>() * intensity * std::f64::consts::PI;
    let jitter =
        Beta::new(2.0, 20.0).map_err(|e| Error::param("motion_kernel", "beta", e.to_string()))?.sample(rng);
    let mut angles: Vec<f64> = Vec::with_capacity(steps.len());
    if !steps.is_empty() {
        angles.push(if theta > 0.0 { rng.gen_range(-theta..theta) } else { 0.0 });
        let tri = Triangular::new(0.0, theta + 0.1, (intensity * theta).min(theta + 0.1))
            .map_err(|e| Error::param("motion_kernel", "triangular", e.to_string()))?;
        while angles.len() < steps.len() {
            let a = tri.sample(rng);
            let prev_sign = angles.last().map_or(1.0, |p: &f64| if *p < 0.0 { -1.0 } else { 1.0 });
            let sign = if rng.gen::<f64>() < jitter { -prev_sign } else { prev_sign };
            angles.push(sign * a);
        }
    }
    // Path points (cumulative sum), centred on their mean, rotated.
    let mut pts: Vec<(f64, f64)> = Vec::with_capacity(steps.len());
    let (mut px, mut py) = (0.0, 0.0);
    for (s, a) in steps.iter().zip(&angles) {
        px += s * a.cos();
        py += s * a.sin();
        pts.push((px, py));
    }
    let n = pts.len().max(1) as f64;
    let (mx, my) = pts.iter().fold((0.0, 0.0), |acc, p| (acc.0 + p.0 / n, acc.1 + p.1 / n));
    let rot = rng.gen::<f64>() * std::f64::consts::PI;
    let (cr, sr) = (rot.cos(), rot.sin());
    let pts: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(x, y)| {
            let (x, y) = (x - mx, y - my);
            (x * cr - y * sr, x * sr + y * cr)
        })
        .collect();
    // Rasterize at the kernel scale (canvas 2s → s), centred on the kernel's middle pixel.
    let s = size as usize;
    let c = (size - 1) as f64 / 2.0;
    let mut k = vec![0.0f64; s * s];
    let mut splat = |x: f64, y: f64| {
        let (u, v) = (x / 2.0 + c, y / 2.0 + c);
        let (u0, v0) = (u.floor(), v.floor());
        let (fu, fv) = (u - u0, v - v0);
        for (du, wu) in [(0.0, 1.0 - fu), (1.0, fu)] {
            for (dv, wv) in [(0.0, 1.0 - fv), (1.0, fv)] {
                let (col, row) = (u0 + du, v0 + dv);
                if col >= 0.0 && row >= 0.0 && (col as usize) < s && (row as usize) < s {
                    k[row as usize * s + col as usize] += wu * wv;
                }
            }
        }
    };
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let m = (len * 4.0).ceil().max(1.0) as usize;
        for t in 0..m {
            let f = t as f64 / m as f64;
            splat(a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1));
        }
    }
    if let Some(&(x, y)) = pts.last() {
        splat(x, y);
    }
    if k.iter().sum::<f64>() <= 0.0 {
        k[s * s / 2] = 1.0;
    }
    let std = ((0.01 * dg).floor() / 2.0).max(0.5);
    let k = smooth(&k, s, std);
    let total: f64 = k.iter().sum();
    Ok(k.into_iter().map(|v| v / total).collect())
}

/// Separable Gaussian smoothing of an `s × s` image with zero boundary.
fn smooth(img: &[f64], s: usize, std: f64) -> Vec<f64> {
    let r = (3.0 * std).ceil() as isize;
    let g: Vec<f64> = (-r..=r).map(|i| (-(i as f64).powi(2) / (2.0 * std * std)).exp()).collect();
    let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
        let mut out = vec![0.0; s * s];
        for row in 0..s {
            for col in 0..s {
                let mut acc = 0.0;
                for (t, w) in g.iter().enumerate() {
                    let off = t as isize - r;
                    let (rr, cc) = if horizontal {
                        (row as isize, col as isize + off)
                    } else {
                        (row as isize + off, col as isize)
                    };
                    if rr >= 0 && cc >= 0 && (rr as usize) < s && (cc as usize) < s {
                        acc += w * src[rr as usize * s + cc as usize];
                    }
                }
                out[row * s + col] = acc;
            }
        }
        out
    };
    pass(&pass(img, true), false)
}
