//! Shared helpers: seeded random tensors and arrays, dense references.

use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tch::Tensor;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard normal values times `scale`, as an f64 tensor of `shape`.
pub fn randn(rng: &mut StdRng, shape: &[i64], scale: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| scale * rng.sample::<f64, _>(StandardNormal)).collect();
    Tensor::from_slice(&v).reshape(shape)
}

pub fn randn_vec(rng: &mut StdRng, n: usize) -> Array1<f64> {
    Array1::from_iter((0..n).map(|_| rng.sample::<f64, _>(StandardNormal)))
}

pub fn randn_mat(rng: &mut StdRng, n: usize, m: usize, scale: f64) -> Array2<f64> {
    Array2::from_shape_fn((n, m), |_| scale * rng.sample::<f64, _>(StandardNormal))
}

/// A random SPD matrix `B Bᵀ / n + shift I`.
pub fn spd(rng: &mut StdRng, n: usize, shift: f64) -> Array2<f64> {
    let b = randn_mat(rng, n, n, 1.0);
    b.dot(&b.t()) / n as f64 + Array2::<f64>::eye(n) * shift
}

/// A random nonsymmetric matrix `shift I + B / √n`.
pub fn nonsym(rng: &mut StdRng, n: usize, shift: f64) -> Array2<f64> {
    randn_mat(rng, n, n, 1.0 / (n as f64).sqrt()) + Array2::<f64>::eye(n) * shift
}

pub fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// `max |a − b| / max(1, max |b|)`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b)) / max_abs(b).max(1.0)
}

pub fn to_tensor(a: &Array2<f64>) -> Tensor {
    let (n, m) = a.dim();
    let v: Vec<f64> = a.iter().copied().collect();
    Tensor::from_slice(&v).reshape([n as i64, m as i64])
}

pub fn norm(v: &Array1<f64>) -> f64 {
    v.dot(v).sqrt()
}

pub fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}
