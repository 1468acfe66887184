//! Random smooth manifolds, "randman" style (docs/method.md §9a).
//!
//! A manifold of dimension m in n ambient dimensions is drawn once from a seed; points on it are images of
//! latent coordinates `z ∈ [0, 1]^m`:
//!
//! ```text
//! K = ceil( ε^(−1/α) )                                  (α = 3, ε = 1e-3 → K = 10)
//! a_{j,l,k}, b_{j,l,k}, c_{j,l,k} ~ U(0, 1)               j = 1..n, l = 1..m, k = 1..K
//! x_j(z) = Π_{l=1..m} Σ_{k=1..K} a_{j,l,k} k^(−α) sin( 2π (k b_{j,l,k} z_l + c_{j,l,k}) )
//! x_j ← 4 (x_j − min_j) / (max_j − min_j) − 2             (per feature, over the sample set)
//! ```
//!
//! The generator carries its own SplitMix64 stream ([`diem_operators::seed::SplitMix64`]), so a seed gives the
//! same manifold on every platform and no global (libtorch) random state is touched: tests running in parallel
//! stay reproducible.
//!
//! ```
//! use diem_models::{Randman, RandmanConfig};
//! # fn main() -> diem_models::Result<()> {
//! let manifold = Randman::new(RandmanConfig::new(1, 5), 7)?;
//! assert_eq!(manifold.frequencies(), 10);
//! let (_latents, points) = manifold.sample(1024, 0)?;
//! assert_eq!(points.size(), vec![1024, 5]);
//! assert!((points.max().double_value(&[]) - 2.0).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

use diem_operators::seed::{SplitMix64, STREAM_OFFSET};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The smoothness α of docs/method.md §9a.
pub const DEFAULT_ALPHA: f64 = 3.0;
/// The cutoff tolerance ε of docs/method.md §9a.
pub const DEFAULT_EPSILON: f64 = 1e-3;

/// The number of frequencies `K = ceil(ε^(−1/α))` (docs/method.md §9a). In float64, `1e-3^(−1/3)` evaluates to
/// `9.999999999999998`, so the reference's K is 10, not 11.
///
/// # Errors
/// [`Error::Config`] unless `α > 0` and `0 < ε < 1` (finite), or when K would not fit in memory terms
/// (more than 1e6 frequencies).
pub fn frequency_count(alpha: f64, epsilon: f64) -> Result<usize> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::config("randman.alpha", format!("must be finite and > 0, got {alpha}")));
    }
    if !(epsilon.is_finite() && epsilon > 0.0 && epsilon < 1.0) {
        return Err(Error::config("randman.epsilon", format!("must lie in (0, 1), got {epsilon}")));
    }
    let k = epsilon.powf(-1.0 / alpha).ceil();
    if k > 1e6 {
        return Err(Error::config(
            "randman.epsilon",
            format!("ε = {epsilon} with α = {alpha} needs {k} frequencies (at most 1e6 are allowed)"),
        ));
    }
    Ok(k as usize)
}

/// The shape and smoothness of a random manifold (a `config.json` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandmanConfig {
    /// Manifold (latent) dimension m.
    pub manifold_dim: i64,
    /// Ambient dimension n (features of each point).
    pub ambient_dim: i64,
    /// Smoothness α (the k-th frequency's amplitude decays as k^(−α)).
    pub alpha: f64,
    /// Cutoff tolerance ε that sets the number of frequencies.
    pub epsilon: f64,
}

impl RandmanConfig {
    /// An m-dimensional manifold in n dimensions with docs/method.md §9a's α = 3 and ε = 1e-3.
    pub fn new(manifold_dim: i64, ambient_dim: i64) -> Self {
        Self { manifold_dim, ambient_dim, alpha: DEFAULT_ALPHA, epsilon: DEFAULT_EPSILON }
    }

    /// Checks the dimensions and (α, ε), returning K.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<usize> {
        if self.manifold_dim < 1 {
            return Err(Error::config(
                "randman.manifold_dim",
                format!("must be ≥ 1, got {}", self.manifold_dim),
            ));
        }
        if self.ambient_dim < 1 {
            return Err(Error::config(
                "randman.ambient_dim",
                format!("must be ≥ 1, got {}", self.ambient_dim),
            ));
        }
        frequency_count(self.alpha, self.epsilon)
    }
}

impl Default for RandmanConfig {
    /// The manifold experiment's generator: m = 1, n = 5 (docs/method.md §9a).
    fn default() -> Self {
        Self::new(1, 5)
    }
}

/// A random smooth manifold drawn from a seed (docs/method.md §9a). Coefficients are float64 tensors
/// `[n, m, K]` on the CPU; evaluate points with [`Randman::embed`] or draw normalized samples with
/// [`Randman::sample`].
#[derive(Debug)]
pub struct Randman {
    config: RandmanConfig,
    frequencies: usize,
    seed: u64,
    /// Amplitudes already multiplied by `k^(−α)`, `[n, m, K]`.
    amplitude: Tensor,
    /// `k b_{j,l,k}`, `[n, m, K]`.
    rate: Tensor,
    /// `c_{j,l,k}`, `[n, m, K]`.
    phase: Tensor,
}

impl Randman {
    /// Draws the coefficients `a, b, c ~ U(0, 1)` (in that order) from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn new(config: RandmanConfig, seed: u64) -> Result<Self> {
        let k = config.validate()?;
        let (n, m) = (config.ambient_dim, config.manifold_dim);
        let count = (n * m) as usize * k;
        let shape = [n, m, k as i64];
        let mut rng = SplitMix64::new(seed);
        let a = rng.uniforms(count);
        let b = rng.uniforms(count);
        let c = rng.uniforms(count);
        let ks: Vec<f64> = (1..=k).map(|i| i as f64).collect();
        let ks = Tensor::from_slice(&ks);
        let decay = ks.pow_tensor_scalar(-config.alpha);
        let amplitude = Tensor::from_slice(&a).reshape(shape) * decay;
        let rate = Tensor::from_slice(&b).reshape(shape) * ks;
        let phase = Tensor::from_slice(&c).reshape(shape);
        Ok(Self { config, frequencies: k, seed, amplitude, rate, phase })
    }

    /// The configuration.
    pub fn config(&self) -> &RandmanConfig {
        &self.config
    }

    /// The number of frequencies K.
    pub fn frequencies(&self) -> usize {
        self.frequencies
    }

    /// The seed the manifold was drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The raw (unnormalized) embedding
    /// `x_j(z) = Π_l Σ_k a_{j,l,k} k^(−α) sin(2π (k b_{j,l,k} z_l + c_{j,l,k}))` of latents `z: [N, m]`,
    /// returned as float64 `[N, n]` on `z`'s device (docs/method.md §9a).
    ///
    /// # Errors
    /// [`Error::Shape`] unless `z` is `[N, m]`.
    pub fn embed(&self, z: &Tensor) -> Result<Tensor> {
        let size = z.size();
        if size.len() != 2 || size[1] != self.config.manifold_dim {
            return Err(Error::shape(
                "Randman::embed latents",
                format!("[N, {}]", self.config.manifold_dim),
                &size,
            ));
        }
        let device = z.device();
        let z = z.to_kind(Kind::Double).unsqueeze(1).unsqueeze(-1); // [N, 1, m, 1]
        let rate = self.rate.to_device(device).unsqueeze(0); // [1, n, m, K]
        let phase = self.phase.to_device(device).unsqueeze(0);
        let amplitude = self.amplitude.to_device(device).unsqueeze(0);
        let angle = (z * rate + phase) * (2.0 * std::f64::consts::PI);
        let per_latent = (angle.sin() * amplitude).sum_dim_intlist(-1, false, Kind::Double); // [N, n, m]
        Ok(per_latent.prod_dim_int(-1, false, Kind::Double))
    }

    /// Latents `z ~ U(0, 1)^m`, `[count, m]` float64, from their own `seed` (independent of the manifold's).
    pub fn sample_latents(&self, count: i64, seed: u64) -> Tensor {
        let m = self.config.manifold_dim;
        let mut rng = SplitMix64::new(seed ^ STREAM_OFFSET);
        let values = rng.uniforms((count.max(0) * m) as usize);
        Tensor::from_slice(&values).reshape([count.max(0), m])
    }

    /// Draws `count` latents from `seed`, embeds them and normalizes every feature to exactly `[−2, 2]` over
    /// the set (docs/method.md §9a). Returns `(latents [count, m], points [count, n])`, float64 on the CPU.
    ///
    /// # Errors
    /// [`Error::Config`] when `count < 2`, or as [`normalize_features`] (a feature constant over the set).
    pub fn sample(&self, count: i64, seed: u64) -> Result<(Tensor, Tensor)> {
        if count < 2 {
            return Err(Error::config("randman.count", format!("need at least 2 points, got {count}")));
        }
        let z = self.sample_latents(count, seed);
        let x = normalize_features(&self.embed(&z)?)?;
        Ok((z, x))
    }
}

/// Per-feature min–max normalization to `[−2, 2]`: `x_j ← 4 (x_j − min_j) / (max_j − min_j) − 2` over the
/// rows of `x: [N, n]` (docs/method.md §9a). The result is float64.
///
/// # Errors
/// [`Error::Shape`] unless `x` is `[N, n]` with N ≥ 2; [`Error::Config`] when a feature is constant (or not
/// finite) over the rows, which leaves its range undefined.
pub fn normalize_features(x: &Tensor) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 2 || size[0] < 2 || size[1] < 1 {
        return Err(Error::shape("normalize_features input", "[N, n] with N ≥ 2, n ≥ 1", &size));
    }
    let x = x.to_kind(Kind::Double);
    let lo = x.amin(0, true);
    let hi = x.amax(0, true);
    let range = &hi - &lo;
    let spans = Vec::<f64>::try_from(range.flatten(0, -1))?;
    if let Some((j, r)) = spans.iter().enumerate().find(|(_, r)| !(r.is_finite() && **r > 0.0)) {
        return Err(Error::config(
            format!("normalize_features feature {j}"),
            format!("the feature's range over the rows must be finite and > 0, got {r}"),
        ));
    }
    Ok((x - lo) / range * 4.0 - 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_frequencies_for_the_reference_settings() {
        assert_eq!(frequency_count(3.0, 1e-3).unwrap(), 10);
        assert_eq!(Randman::new(RandmanConfig::new(1, 3), 0).unwrap().frequencies(), 10);
        // A genuinely larger K when ε is just below the boundary.
        assert_eq!(frequency_count(3.0, 0.999e-3).unwrap(), 11);
        assert_eq!(frequency_count(1.0, 0.5).unwrap(), 2);
        assert!(frequency_count(0.0, 1e-3).is_err());
        assert!(frequency_count(3.0, 1.0).is_err());
    }

    #[test]
    fn every_feature_spans_exactly_minus_two_to_two() {
        for (m, n) in [(1, 3), (1, 5), (2, 7)] {
            let manifold = Randman::new(RandmanConfig::new(m, n), 11 + n as u64).unwrap();
            let (z, x) = manifold.sample(500, 3).unwrap();
            assert_eq!(z.size(), vec![500, m]);
            assert_eq!(x.size(), vec![500, n]);
            let lo = Vec::<f64>::try_from(x.amin(0, false)).unwrap();
            let hi = Vec::<f64>::try_from(x.amax(0, false)).unwrap();
            for j in 0..n as usize {
                assert!((lo[j] + 2.0).abs() < 1e-12, "feature {j} min {}", lo[j]);
                assert!((hi[j] - 2.0).abs() < 1e-12, "feature {j} max {}", hi[j]);
            }
        }
    }

    #[test]
    fn same_seed_same_manifold_other_seed_other_manifold() {
        let config = RandmanConfig::new(1, 4);
        let a = Randman::new(config.clone(), 5).unwrap();
        let b = Randman::new(config.clone(), 5).unwrap();
        let c = Randman::new(config, 6).unwrap();
        let z = a.sample_latents(64, 1);
        assert_eq!(z, b.sample_latents(64, 1));
        let (xa, xb, xc) = (a.embed(&z).unwrap(), b.embed(&z).unwrap(), c.embed(&z).unwrap());
        assert_eq!(xa, xb);
        assert!((xa - xc).abs().max().double_value(&[]) > 1e-3);
    }

    #[test]
    fn embedding_matches_the_formula_pointwise() {
        let config = RandmanConfig { manifold_dim: 2, ambient_dim: 3, alpha: 2.0, epsilon: 0.1 };
        let manifold = Randman::new(config, 9).unwrap();
        let k = manifold.frequencies();
        assert_eq!(k, 4);
        // Recreate the coefficient stream and evaluate the sum by hand.
        let mut rng = SplitMix64::new(9);
        let count = 3 * 2 * k;
        let (a, b, c) = (rng.uniforms(count), rng.uniforms(count), rng.uniforms(count));
        let z = [0.3f64, 0.85];
        let x = manifold.embed(&Tensor::from_slice(&z).reshape([1, 2])).unwrap();
        for j in 0..3 {
            let mut prod = 1.0;
            for (l, zl) in z.iter().enumerate() {
                let mut sum = 0.0;
                for kk in 0..k {
                    let i = (j * 2 + l) * k + kk;
                    let freq = (kk + 1) as f64;
                    sum += a[i]
                        * freq.powf(-2.0)
                        * (2.0 * std::f64::consts::PI * (freq * b[i] * zl + c[i])).sin();
                }
                prod *= sum;
            }
            assert!((x.double_value(&[0, j as i64]) - prod).abs() < 1e-12);
        }
    }

    #[test]
    fn latents_are_uniform_on_the_unit_interval() {
        let manifold = Randman::new(RandmanConfig::new(1, 2), 0).unwrap();
        let z = manifold.sample_latents(20_000, 4);
        assert!(z.min().double_value(&[]) >= 0.0 && z.max().double_value(&[]) < 1.0);
        assert!((z.mean(Kind::Double).double_value(&[]) - 0.5).abs() < 0.01);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Randman::new(RandmanConfig::new(0, 3), 0).is_err());
        assert!(Randman::new(RandmanConfig::new(1, 0), 0).is_err());
        let manifold = Randman::new(RandmanConfig::new(2, 3), 0).unwrap();
        assert!(manifold.embed(&Tensor::zeros([4, 1], (Kind::Double, tch::Device::Cpu))).is_err());
        assert!(manifold.sample(1, 0).is_err());
        let constant = Tensor::ones([5, 2], (Kind::Double, tch::Device::Cpu));
        assert!(normalize_features(&constant).is_err());
    }
}
