//! Small building blocks shared by the networks: linear and convolution layers with the reference
//! initialization, and LayerNorm without affine parameters (docs/method.md §9a, §9b).

use tch::nn::{self, Init};
use tch::Tensor;

/// LayerNorm's ε (docs/method.md §9a, §9b).
pub const LN_EPS: f64 = 1e-5;

/// A fully connected layer `y = x Wᵀ + b` with `W ~ U(±1/sqrt(fan_in))` and `b = 0` (docs/method.md §9a).
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`, absent for bias-free layers.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Creates `weight` (and `bias` when `bias`) under `path`; `weight_scale` multiplies the initial
    /// weights (0.1 for the modulation MLPs' last layer, docs/method.md §9b).
    pub fn new(path: nn::Path, fan_in: i64, fan_out: i64, bias: bool, weight_scale: f64) -> Self {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform { lo: -bound * weight_scale, up: bound * weight_scale };
        let weight = path.var("weight", &[fan_out, fan_in], init);
        let bias = bias.then(|| path.var("bias", &[fan_out], Init::Const(0.0)));
        Self { weight, bias }
    }

    /// `x Wᵀ + b` over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    /// Number of scalar parameters of a layer with these sizes.
    pub fn count(fan_in: i64, fan_out: i64, bias: bool) -> i64 {
        fan_in * fan_out + if bias { fan_out } else { 0 }
    }
}

/// A 2-D convolution with "same" padding `(k − 1)/2`, optional stride, weights `U(±1/sqrt(k²·C_in))` and zero
/// bias (docs/method.md §9b).
#[derive(Debug)]
pub struct Conv2d {
    /// `[C_out, C_in, k, k]`.
    pub weight: Tensor,
    /// `[C_out]`.
    pub bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    /// Creates the layer under `path`.
    pub fn new(path: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> Self {
        let bound = 1.0 / ((kernel * kernel * c_in) as f64).sqrt();
        let weight =
            path.var("weight", &[c_out, c_in, kernel, kernel], Init::Uniform { lo: -bound, up: bound });
        let bias = path.var("bias", &[c_out], Init::Const(0.0));
        Self { weight, bias, stride, padding: (kernel - 1) / 2 }
    }

    /// Applies the convolution to `[N, C_in, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    /// Number of scalar parameters of a layer with these sizes.
    pub fn count(c_in: i64, c_out: i64, kernel: i64) -> i64 {
        c_out * c_in * kernel * kernel + c_out
    }
}

/// LayerNorm over the last dimension without affine parameters (ε = 1e-5).
pub fn layer_norm_last(x: &Tensor) -> Tensor {
    let d = x.size().last().copied().unwrap_or(1);
    x.layer_norm([d], None::<Tensor>, None::<Tensor>, LN_EPS, false)
}

/// `LN_C`: LayerNorm over the channels of `[N, C, H, W]` at each pixel, without affine parameters (ε = 1e-5).
pub fn layer_norm_channels(x: &Tensor) -> Tensor {
    let (var, mean) = x.var_mean_correction(1, 0, true);
    (x - mean) * (var + LN_EPS).rsqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn channel_norm_matches_layer_norm_on_nhwc() {
        let x = Tensor::randn([2, 5, 3, 4], (Kind::Double, Device::Cpu));
        let a = layer_norm_channels(&x);
        let b = layer_norm_last(&x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
        assert!((a - b).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn init_bounds_and_zero_bias() {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = Linear::new(vs.root() / "l", 16, 8, true, 0.1);
        let m = l.weight.abs().max().double_value(&[]);
        assert!(m <= 0.1 / 4.0 + 1e-7 && m > 0.0);
        assert_eq!(l.bias.as_ref().map(|b| b.abs().sum(Kind::Float).double_value(&[])), Some(0.0));
        let c = Conv2d::new(vs.root() / "c", 4, 3, 3, 1);
        assert!(c.weight.abs().max().double_value(&[]) <= 1.0 / 6.0 + 1e-7);
        let y = c.forward(&Tensor::randn([1, 4, 5, 7], (Kind::Float, Device::Cpu)));
        assert_eq!(y.size(), vec![1, 3, 5, 7]);
    }
}
