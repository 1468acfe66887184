//! Seeded host-side randomness: every draw of the studies comes from a [`StdRng`] derived from the run seed and
//! a stream number, so results do not depend on libtorch's global generator (shared by parallel tests).

use diem_operators::seed::{host_rng, mix64, GOLDEN_GAMMA};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::error::{BenchError, Result};

/// A generator for stream `stream` of run `seed` (SplitMix64-mixed, so nearby seeds give unrelated streams):
/// [`host_rng`]`(mix64(seed·γ ⊕ (stream + 0x632BE59BD9B4E019)))` with the seed module's [`mix64`] and
/// γ = [`GOLDEN_GAMMA`] (wrapping arithmetic).
pub fn stream(seed: u64, stream: u64) -> StdRng {
    host_rng(mix64(seed.wrapping_mul(GOLDEN_GAMMA) ^ stream.wrapping_add(0x632B_E59B_D9B4_E019)))
}

/// Standard-normal draws as a float64 CPU tensor of `shape`.
pub fn normal(rng: &mut StdRng, shape: &[i64]) -> Tensor {
    let count: i64 = shape.iter().product();
    let values: Vec<f64> = (0..count.max(0)).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// Uniform indices `0..n`, `[count]` int64.
pub fn uniform_indices(rng: &mut StdRng, n: i64, count: i64) -> Tensor {
    use rand::Rng;
    let values: Vec<i64> = (0..count.max(0)).map(|_| rng.gen_range(0..n.max(1))).collect();
    Tensor::from_slice(&values)
}

/// Multinomial resampling with replacement: `count` indices drawn with probabilities `∝ exp(log_weights)`,
/// `[count]` int64 (docs/method.md §10.3–10.4). The weights are shifted by their maximum before exponentiation.
///
/// # Errors
/// [`BenchError::Weights`] when no weight is positive and finite.
pub fn resample(rng: &mut StdRng, log_weights: &Tensor, count: i64, what: &str) -> Result<Tensor> {
    let logw = Vec::<f64>::try_from(log_weights.to_kind(Kind::Double).flatten(0, -1))?;
    let max = logw.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return Err(BenchError::Weights { what: what.into(), reason: "no finite log-weight".into() });
    }
    let weights: Vec<f64> = logw.iter().map(|v| if v.is_finite() { (v - max).exp() } else { 0.0 }).collect();
    let dist = WeightedIndex::new(&weights)
        .map_err(|e| BenchError::Weights { what: what.into(), reason: e.to_string() })?;
    let values: Vec<i64> = (0..count.max(0)).map(|_| dist.sample(rng) as i64).collect();
    Ok(Tensor::from_slice(&values))
}

/// The effective sample size `(Σ w)² / Σ w²` of importance weights given as logs.
pub fn effective_sample_size(log_weights: &Tensor) -> f64 {
    let w = (log_weights - log_weights.max()).exp();
    let s = w.sum(Kind::Double).double_value(&[]);
    let s2 = w.square().sum(Kind::Double).double_value(&[]);
    s * s / s2
}

#[cfg(test)]
mod tests {
    use rand::RngCore;

    /// The streams' first draws, captured from the formula before it moved onto `diem_operators::seed`: every
    /// study's draws depend on them.
    #[test]
    fn streams_are_frozen() {
        let cases = [
            ((0, 0), 0xe15e_f94b_bd45_9157),
            ((1, 1), 0x12f0_339a_a82b_11ec),
            ((2, 3), 0x21fe_a03d_3c1b_0a26),
            ((u64::MAX, 7), 0xdbe5_68b3_c9b2_a605),
        ];
        for ((seed, stream), want) in cases {
            assert_eq!(super::stream(seed, stream).next_u64(), want, "stream({seed}, {stream})");
        }
    }
}
