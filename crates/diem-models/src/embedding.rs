//! The sinusoidal noise embedding (docs/method.md §3.2).

use tch::Tensor;

use crate::error::{Error, Result};

/// `emb(c) = [sin(ω_0 c), …, sin(ω_{K−1} c), cos(ω_0 c), …, cos(ω_{K−1} c)]` with `K = E/2` and
/// `ω_k = (1e-4)^(k/(K−1))`, so the frequencies run from exactly 1 down to exactly 1e-4 (docs/method.md §3.2).
/// All sines come first, then all cosines. No trainable parameters.
///
/// ```
/// use diem_models::SineEmbedding;
/// let emb = SineEmbedding::new(64).unwrap();
/// let w = emb.frequencies();
/// assert_eq!(w.len(), 32);
/// assert_eq!(w[0], 1.0);
/// assert!((w[31] - 1e-4).abs() < 1e-18);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SineEmbedding {
    features: i64,
}

impl SineEmbedding {
    /// An embedding with `features = E` outputs.
    ///
    /// # Errors
    /// [`Error::Config`] unless `E` is even and at least 4 (K ≥ 2, so that `k/(K−1)` is defined).
    pub fn new(features: i64) -> Result<Self> {
        if features < 4 || features % 2 != 0 {
            return Err(Error::config(
                "embedding_features",
                format!("must be even and at least 4, got {features}"),
            ));
        }
        Ok(Self { features })
    }

    /// The number of output features E.
    pub fn features(&self) -> i64 {
        self.features
    }

    /// The frequencies `ω_k = (1e-4)^(k/(K−1))`, `k = 0..K`.
    pub fn frequencies(&self) -> Vec<f64> {
        let k = self.features / 2;
        (0..k)
            .map(|i| {
                if i == 0 {
                    1.0
                } else if i == k - 1 {
                    1e-4
                } else {
                    1e-4_f64.powf(i as f64 / (k - 1) as f64)
                }
            })
            .collect()
    }

    /// Embeds `c` of shape `[N]` (or `[]`) into `[N, E]` (or `[E]`), in `c`'s kind and device.
    pub fn forward(&self, c: &Tensor) -> Tensor {
        let w = Tensor::from_slice(&self.frequencies()).to_kind(c.kind()).to_device(c.device());
        let angles = c.unsqueeze(-1) * w;
        Tensor::cat(&[angles.sin(), angles.cos()], -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sines_first_then_cosines() {
        let emb = SineEmbedding::new(8).unwrap();
        let w = emb.frequencies();
        assert_eq!(w, vec![1.0, 1e-4_f64.powf(1.0 / 3.0), 1e-4_f64.powf(2.0 / 3.0), 1e-4]);
        let c = Tensor::from_slice(&[0.7f64, -2.0]);
        let e = emb.forward(&c);
        assert_eq!(e.size(), vec![2, 8]);
        for (n, cv) in [0.7f64, -2.0].iter().enumerate() {
            for (k, wk) in w.iter().enumerate() {
                let s = e.double_value(&[n as i64, k as i64]);
                let co = e.double_value(&[n as i64, 4 + k as i64]);
                assert!((s - (wk * cv).sin()).abs() < 1e-14);
                assert!((co - (wk * cv).cos()).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn rejects_odd_or_tiny_sizes() {
        assert!(SineEmbedding::new(7).is_err());
        assert!(SineEmbedding::new(2).is_err());
        assert_eq!(SineEmbedding::new(256).unwrap().features(), 256);
    }
}
