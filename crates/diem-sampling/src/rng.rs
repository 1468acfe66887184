//! Gaussian noise for the samplers: seeded on the host, or libtorch's global generator.

use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// The source of the standard normal draws a sampler needs (initial value, DDPM and Langevin noise).
///
/// - [`NoiseRng::seeded`] draws on the host from [`diem_operators::seed::host_rng`] (`StdRng::seed_from_u64`,
///   the generator of every seeded host draw in diem) in `f64`, then casts and moves the tensor: the same seed
///   gives the same samples on every device and dtype, independently of other threads (libtorch's generator
///   is process-global). This is the default for reproducible runs and tests.
/// - [`NoiseRng::torch`] uses libtorch's global generator on the target device (no host round trip; faster for
///   large GPU batches). Seed it with `tch::manual_seed` when reproducibility matters.
#[derive(Debug)]
pub struct NoiseRng {
    host: Option<StdRng>,
}

impl NoiseRng {
    /// Host-side draws from [`diem_operators::seed::host_rng`]`(seed)`.
    pub fn seeded(seed: u64) -> Self {
        Self { host: Some(diem_operators::seed::host_rng(seed)) }
    }

    /// Draws from libtorch's global generator (`Tensor::randn`).
    pub fn torch() -> Self {
        Self { host: None }
    }

    /// A tensor of independent standard normals with the given shape, kind and device. Never requires grad.
    pub fn normal(&mut self, shape: &[i64], kind: Kind, device: Device) -> Tensor {
        match &mut self.host {
            Some(rng) => {
                let numel: i64 = shape.iter().product();
                let z: Vec<f64> = (0..numel).map(|_| StandardNormal.sample(rng)).collect();
                Tensor::from_slice(&z).reshape(shape).to_kind(kind).to_device(device)
            }
            None => tch::no_grad(|| Tensor::randn(shape, (kind, device))),
        }
    }

    /// Standard normals shaped like `x` (same kind and device).
    pub fn normal_like(&mut self, x: &Tensor) -> Tensor {
        self.normal(&x.size(), x.kind(), x.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_have_unit_moments() {
        let a = NoiseRng::seeded(7).normal(&[4000, 5], Kind::Double, Device::Cpu);
        let b = NoiseRng::seeded(7).normal(&[4000, 5], Kind::Double, Device::Cpu);
        let c = NoiseRng::seeded(8).normal(&[4000, 5], Kind::Double, Device::Cpu);
        assert_eq!(f64::try_from((&a - &b).abs().max()).unwrap(), 0.0);
        assert!(f64::try_from((&a - &c).abs().max()).unwrap() > 0.1);
        let mean = f64::try_from(a.mean(Kind::Double)).unwrap();
        let var = f64::try_from(a.var(true)).unwrap();
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean}, var {var}");
        let t = NoiseRng::torch().normal(&[3, 2], Kind::Float, Device::Cpu);
        assert_eq!(t.size(), vec![3, 2]);
        assert!(!t.requires_grad());
    }
}
