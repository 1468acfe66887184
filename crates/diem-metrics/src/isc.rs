//! Inception Score as torch-fidelity computes it (docs/method.md §9b "Evaluation": IS with 10 splits).

use tch::{Kind, Tensor};

use crate::error::{MetricsError, Result};

/// The seed torch-fidelity shuffles the logits with before splitting (`rng_seed=2020`).
pub const TORCH_FIDELITY_SEED: u32 = 2020;

/// torch-fidelity's default number of splits.
pub const DEFAULT_SPLITS: usize = 10;

/// Inception Score of logits `[N, K]`, taken in the given order (no shuffle):
///
/// ```text
/// p(y|x) = softmax(logits),  for split s = rows [s N / S, (s+1) N / S):
/// IS_s = exp( mean_{x in s} KL(p(y|x) || p_s(y)) ),  p_s(y) = mean_{x in s} p(y|x),
/// ```
///
/// computed in f64 with `0 log 0 = 0`; returns `(mean_s IS_s, std_s IS_s)` with the population standard
/// deviation, as torch-fidelity's `isc_features_to_metric` (`np.mean`, `np.std`). Needs `1 ≤ splits ≤ N`.
/// torch-fidelity itself first shuffles the rows: [`inception_score_shuffled`] reproduces that.
pub fn inception_score(logits: &Tensor, splits: usize) -> Result<(f64, f64)> {
    let n = check_logits(logits, splits)?;
    let log_p = logits.f_to_kind(Kind::Double)?.f_log_softmax(1, Kind::Double)?;
    let p = log_p.f_exp()?;
    let s = splits as i64;
    let mut scores = Vec::with_capacity(splits);
    for i in 0..s {
        let (lo, hi) = (i * n / s, (i + 1) * n / s);
        let (p_s, log_p_s) = (p.f_narrow(0, lo, hi - lo)?, log_p.f_narrow(0, lo, hi - lo)?);
        let log_q = p_s.f_mean_dim([0i64].as_slice(), true, Kind::Double)?.f_log()?;
        let terms = p_s.f_mul(&log_p_s.f_sub(&log_q)?)?;
        let terms = terms.f_where_scalarother(&p_s.f_gt(0.0)?, 0.0)?;
        let kl = terms.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?.f_mean(Kind::Double)?;
        scores.push(kl.f_double_value(&[])?.exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / splits as f64;
    Ok((mean, var.sqrt()))
}

/// [`inception_score`] after permuting the rows with NumPy's `np.random.RandomState(seed).permutation(N)`, as
/// torch-fidelity does by default (`shuffle=True`, `rng_seed=2020`, see [`TORCH_FIDELITY_SEED`]), so that the
/// split assignment — and the score — match torch-fidelity's for the same logits in the same order.
pub fn inception_score_shuffled(logits: &Tensor, splits: usize, seed: u32) -> Result<(f64, f64)> {
    let n = check_logits(logits, splits)?;
    let order = Tensor::from_slice(&numpy_permutation(n as usize, seed));
    let shuffled = logits.f_index_select(0, &order.f_to_device(logits.device())?)?;
    inception_score(&shuffled, splits)
}

fn check_logits(logits: &Tensor, splits: usize) -> Result<i64> {
    let size = logits.size();
    let &[n, k] = size.as_slice() else {
        return Err(MetricsError::Shape {
            metric: "inception_score",
            what: format!("logits must be [N, K], got {size:?}"),
        });
    };
    if n < 1 || k < 1 {
        return Err(MetricsError::Shape {
            metric: "inception_score",
            what: format!("logits must be non-empty, got {size:?}"),
        });
    }
    if splits < 1 {
        return Err(MetricsError::Parameter {
            metric: "inception_score",
            name: "splits",
            value: 0.0,
            expected: "an integer ≥ 1",
        });
    }
    if splits as i64 > n {
        return Err(MetricsError::TooFewSamples { metric: "inception_score", needed: splits as i64, got: n });
    }
    if !bool::try_from(logits.f_isfinite()?.f_all()?)? {
        return Err(MetricsError::NonFinite { metric: "inception_score", input: "logits" });
    }
    Ok(n)
}

/// NumPy's legacy `RandomState(seed).permutation(n)`: MT19937 seeded by `init_genrand(seed)`, then a
/// Fisher–Yates shuffle of `0..n` from the back drawing `j ∈ [0, i]` by masked rejection sampling
/// (`random_interval`; 32-bit draws since `i < 2³²` for any realistic N).
pub fn numpy_permutation(n: usize, seed: u32) -> Vec<i64> {
    let mut rng = Mt19937::new(seed);
    let mut perm: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = rng.interval(i as u64) as usize;
        perm.swap(i, j);
    }
    perm
}

/// The 32-bit Mersenne Twister (Matsumoto & Nishimura 1998), as in NumPy's legacy `RandomState`.
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, pos: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.pos = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// NumPy's `random_interval(max)`: uniform on `[0, max]` by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        loop {
            let value = if max <= u64::from(u32::MAX) {
                u64::from(self.next_u32()) & mask
            } else {
                self.next_u64() & mask
            };
            if value <= max {
                return value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_outputs() {
        // Matsumoto & Nishimura's reference: init_genrand(5489) gives 3499211612, 581869302, 3890346734, ...
        let mut rng = Mt19937::new(5489);
        assert_eq!(
            [rng.next_u32(), rng.next_u32(), rng.next_u32()],
            [3_499_211_612, 581_869_302, 3_890_346_734]
        );
    }
}
