//! Image augmentations of the training samples (docs/method.md §9b, §9c), on batches `[N, C, H, W]` of data in
//! `[−2, 2]`. Each sample draws its own random parameters, every time it is drawn.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Which augmentations to apply (a `config.json` section). All off by default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Horizontal flip (along W) with probability 1/2.
    pub hflip: bool,
    /// Hue rotation by `δ ~ U(−hue, hue)` of the hue circle (RGB images only); 0 = off.
    pub hue: f64,
    /// Saturation factor `U(1 − saturation, 1 + saturation)` (RGB images only); 0 = off.
    pub saturation: f64,
    /// Random integer translation of up to ± `translate` pixels in H and W by reflect padding and cropping at
    /// a uniform offset in `{0..2·translate}²`; 0 = off.
    pub translate: i64,
}

impl AugmentConfig {
    /// The CIFAR-10 default (docs/method.md §9b): flip + hue ±0.01 + saturation 0.95–1.05.
    pub fn cifar() -> Self {
        Self { hflip: true, hue: 0.01, saturation: 0.05, translate: 0 }
    }

    /// The earlier CIFAR-10 variant (docs/method.md §13): flip + ±1 pixel reflect-pad-and-crop.
    pub fn cifar_shift() -> Self {
        Self { hflip: true, translate: 1, ..Self::default() }
    }

    /// The MRI augmentation (docs/method.md §9c): flip + ±4 pixel reflect-pad-and-crop.
    pub fn mri() -> Self {
        Self { hflip: true, translate: 4, ..Self::default() }
    }

    /// Whether any augmentation is on.
    pub fn is_active(&self) -> bool {
        self.hflip || self.hue > 0.0 || self.saturation > 0.0 || self.translate > 0
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::config("augment.hue", format!("must lie in [0, 0.5], got {}", self.hue)));
        }
        if !(0.0..1.0).contains(&self.saturation) {
            return Err(Error::config(
                "augment.saturation",
                format!("must lie in [0, 1), got {}", self.saturation),
            ));
        }
        if self.translate < 0 {
            return Err(Error::config("augment.translate", format!("must be ≥ 0, got {}", self.translate)));
        }
        Ok(())
    }

    /// Applies the augmentations to `x: [N, C, H, W]`, in order flip, hue/saturation, translation.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not 4-D, hue/saturation are on and `C ≠ 3`, or the translation is not
    /// smaller than H and W (reflect padding needs it).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 {
            return Err(Error::shape("augmentation input", "[N, C, H, W]", &size));
        }
        let n = size[0];
        let mut x = x.shallow_clone();
        if self.hflip {
            let flip = Tensor::rand([n, 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
            x = x.flip([3]).where_self(&flip, &x);
        }
        if self.hue > 0.0 || self.saturation > 0.0 {
            if size[1] != 3 {
                return Err(Error::shape("hue/saturation augmentation input", "[N, 3, H, W] (RGB)", &size));
            }
            let opts = (x.kind(), x.device());
            let delta = Tensor::rand([n, 1, 1], opts) * (2.0 * self.hue) - self.hue;
            let factor = Tensor::rand([n, 1, 1], opts) * (2.0 * self.saturation) + (1.0 - self.saturation);
            x = adjust_hue_saturation(&x, &delta, &factor);
        }
        if self.translate > 0 {
            if self.translate >= size[2] || self.translate >= size[3] {
                return Err(Error::shape(
                    "translation augmentation input",
                    format!("H and W larger than translate = {}", self.translate),
                    &size,
                ));
            }
            let offsets = Tensor::randint(2 * self.translate + 1, [n, 2], (Kind::Int64, x.device()));
            x = pad_and_crop(&x, self.translate, &offsets);
        }
        Ok(x)
    }
}

/// RGB in `[0, 1]` (`[N, 3, H, W]`) to HSV (`h, s, v` each `[N, H, W]`, `h ∈ [0, 1)`).
pub fn rgb_to_hsv(rgb: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (r, g, b) = (rgb.select(1, 0), rgb.select(1, 1), rgb.select(1, 2));
    let maxc = rgb.amax(1, false);
    let minc = rgb.amin(1, false);
    let delta = &maxc - &minc;
    let safe_delta = delta.clamp_min(1e-12);
    let s = (&delta / maxc.clamp_min(1e-12)).where_self(&maxc.gt(0.0), &maxc.zeros_like());
    let rc = (&maxc - &r) / &safe_delta;
    let gc = (&maxc - &g) / &safe_delta;
    let bc = (&maxc - &b) / &safe_delta;
    let h_b = &gc - &rc + 4.0;
    let h_g = (&rc - &bc + 2.0).where_self(&g.eq_tensor(&maxc), &h_b);
    let h = (&bc - &gc).where_self(&r.eq_tensor(&maxc), &h_g);
    let h = (h / 6.0).remainder(1.0).where_self(&delta.gt(0.0), &delta.zeros_like());
    (h, s, maxc)
}

/// HSV (each `[N, H, W]`) to RGB `[N, 3, H, W]`: channel `n ∈ {5, 3, 1}` is
/// `v − v s max(0, min(k, 4 − k, 1))` with `k = (n + 6h) mod 6`.
pub fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let channel = |n: f64| {
        let k = (h * 6.0 + n).remainder(6.0);
        let m = k.minimum(&(-&k + 4.0)).clamp(0.0, 1.0);
        v - v * s * m
    };
    Tensor::stack(&[channel(5.0), channel(3.0), channel(1.0)], 1)
}

/// Rotates the hue by `delta` and scales the saturation by `factor` (both `[N, 1, 1]`) of images in `[−2, 2]`:
/// through `(x + 2)/4` clamped to `[0, 1]`, HSV, and back (docs/method.md §9b). Pixels outside `[−2, 2]` are clamped.
pub fn adjust_hue_saturation(x: &Tensor, delta: &Tensor, factor: &Tensor) -> Tensor {
    let rgb = ((x + 2.0) / 4.0).clamp(0.0, 1.0);
    let (h, s, v) = rgb_to_hsv(&rgb);
    let h = (h + delta).remainder(1.0);
    let s = (s * factor).clamp(0.0, 1.0);
    hsv_to_rgb(&h, &s, &v) * 4.0 - 2.0
}

/// Reflect-pads `x: [N, C, H, W]` by `pad` (mirror, edge not repeated) and crops `H × W` at per-sample
/// offsets `offsets: [N, 2]` (row, column) in `{0..2·pad}`.
pub fn pad_and_crop(x: &Tensor, pad: i64, offsets: &Tensor) -> Tensor {
    let (n, c, h, w) = x.size4().unwrap_or_else(|e| panic!("pad_and_crop expects [N, C, H, W]: {e}"));
    let padded = x.reflection_pad2d([pad, pad, pad, pad]);
    let opts = (Kind::Int64, x.device());
    let rows = offsets.select(1, 0).unsqueeze(1) + Tensor::arange(h, opts).unsqueeze(0); // [N, H]
    let cols = offsets.select(1, 1).unsqueeze(1) + Tensor::arange(w, opts).unsqueeze(0); // [N, W]
    let rows = rows.view([n, 1, h, 1]).expand([n, c, h, w + 2 * pad], false);
    let cropped_rows = padded.gather(2, &rows, false);
    let cols = cols.view([n, 1, 1, w]).expand([n, c, h, w], false);
    cropped_rows.gather(3, &cols, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn hsv_round_trip_and_primary_rotation() {
        tch::manual_seed(0);
        let rgb = Tensor::rand([2, 3, 4, 5], (Kind::Double, Device::Cpu));
        let (h, s, v) = rgb_to_hsv(&rgb);
        let back = hsv_to_rgb(&h, &s, &v);
        assert!((back - &rgb).abs().max().double_value(&[]) < 1e-12);
        // Pure red rotated by 1/3 of the hue circle is pure green.
        let red = Tensor::from_slice(&[1.0f64, 0.0, 0.0]).view([1, 3, 1, 1]) * 4.0 - 2.0;
        let third = Tensor::from_slice(&[1.0f64 / 3.0]).view([1, 1, 1]);
        let one = Tensor::ones([1, 1, 1], (Kind::Double, Device::Cpu));
        let green = adjust_hue_saturation(&red, &third, &one);
        let want = Tensor::from_slice(&[-2.0f64, 2.0, -2.0]).view([1, 3, 1, 1]);
        assert!((green - want).abs().max().double_value(&[]) < 1e-12);
        // Saturation 0 gives grey at the max channel (value is kept).
        let grey = adjust_hue_saturation(&(&rgb * 4.0 - 2.0), &third.zeros_like(), &one.zeros_like());
        let vmax = (rgb.amax(1, true) * 4.0 - 2.0).expand([2, 3, 4, 5], false);
        assert!((grey - vmax).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn crop_at_centre_is_identity_and_offsets_shift() {
        let x = Tensor::arange(2 * 5 * 6, (Kind::Double, Device::Cpu)).view([2, 1, 5, 6]);
        let centre = Tensor::from_slice(&[2i64, 2, 2, 2]).view([2, 2]);
        assert!(pad_and_crop(&x, 2, &centre).equal(&x));
        // Offset (0, 4) on sample 0: rows shifted up by 2 with reflection, columns shifted left by 2.
        let off = Tensor::from_slice(&[0i64, 4, 2, 2]).view([2, 2]);
        let y = pad_and_crop(&x, 2, &off);
        // Row index −2 reflects to 2; column 0 + 2 = 2.
        assert_eq!(y.double_value(&[0, 0, 0, 0]), x.double_value(&[0, 0, 2, 2]));
        assert_eq!(y.double_value(&[0, 0, 3, 1]), x.double_value(&[0, 0, 1, 3]));
        // Column 5 + 2 = 7 reflects to 3.
        assert_eq!(y.double_value(&[0, 0, 4, 5]), x.double_value(&[0, 0, 2, 3]));
        assert!(y.get(1).equal(&x.get(1)));
    }

    #[test]
    fn flips_are_per_sample_and_config_checks() {
        tch::manual_seed(1);
        let x = Tensor::randn([64, 1, 2, 3], (Kind::Float, Device::Cpu));
        let y = AugmentConfig { hflip: true, ..Default::default() }.apply(&x).unwrap();
        let flipped = x.flip([3]);
        let mut n_flip = 0;
        for i in 0..64 {
            let same = y.get(i).equal(&x.get(i));
            let flip = y.get(i).equal(&flipped.get(i));
            assert!(same || flip);
            n_flip += i64::from(flip && !same);
        }
        assert!((16..=48).contains(&n_flip), "{n_flip} of 64 flipped");
        assert!(AugmentConfig::cifar().apply(&x).is_err()); // not RGB
        assert!(AugmentConfig { translate: 3, ..Default::default() }.apply(&x).is_err());
        assert!(AugmentConfig { hue: 0.7, ..Default::default() }.validate().is_err());
        assert!(AugmentConfig::mri().is_active() && !AugmentConfig::default().is_active());
    }
}
