//! Seeds: the one place where diem turns a seed into random numbers or into other seeds.
//!
//! Every random draw in diem is reproducible from a `u64` seed, and every crate derives its seeds here, so
//! that a seed means the same thing everywhere and a resumed or distributed run draws exactly what the
//! uninterrupted single-process run drew. Three kinds of function:
//!
//! - **Host generators.** [`host_rng`] is the generator behind every seeded draw on the host
//!   (`StdRng::seed_from_u64(seed)`: random operators, observation noise, `diem_sampling::NoiseRng::seeded`):
//!   drawing on the host in `f64` and then moving the tensor makes a seed give the same numbers on every
//!   device and dtype, independently of libtorch's process-global generator. [`SplitMix64`] is the tiny
//!   platform-independent generator of the random manifold's coefficients and latents.
//! - **Derived seeds.** [`fold_seeds`] folds a list of numbers (a run seed, a purpose tag, a lap, a chunk
//!   index, …) into one seed with SplitMix64 (`h ← splitmix64(h ⊕ v)` from `h = 0`); `diem_em::derive_seed`
//!   is `fold_seeds(&[seed, purpose, lap, index])`. [`stream_seed`] is the older two-argument mix of the
//!   fastMRI preparation (seed, stream index). Different arguments give unrelated seeds with overwhelming
//!   probability; equal arguments always give the same seed.
//! - **libtorch.** [`torch_seed`] maps a derived `u64` seed to `tch::manual_seed`'s non-negative `i64`.
//!
//! The functions are frozen: changing any of them changes every sample, checkpoint and observation set
//! diem has written, so the unit tests pin their values.
//!
//! ```
//! use diem_operators::seed::{fold_seeds, splitmix64, torch_seed};
//!
//! let lap_seed = fold_seeds(&[7, 3, 2, 0]); // run seed 7, purpose tag 3, lap 2, chunk 0
//! assert_eq!(lap_seed, splitmix64(splitmix64(splitmix64(splitmix64(7) ^ 3) ^ 2) ^ 0));
//! assert!(torch_seed(lap_seed) >= 0);
//! ```

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The SplitMix64 increment `⌊2⁶⁴/φ⌋` (φ the golden ratio), odd.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The constant [`stream_seed`] adds to the scaled stream index (and `diem_models::Randman` XORs into the
/// latents' seed), so that stream 0 of seed 0 is not the all-zero state.
pub const STREAM_OFFSET: u64 = 0xD1B5_4A32_D192_ED03;

/// SplitMix64's output function (Stafford's "Mix13" finalizer), a bijection of `u64`:
/// `z ← (z ⊕ z≫30)·0xBF58476D1CE4E5B9; z ← (z ⊕ z≫27)·0x94D049BB133111EB; z ⊕ z≫31` (wrapping products).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step as a function: `mix64(z + γ)` with γ = [`GOLDEN_GAMMA`] (wrapping), a bijective
/// 64-bit mix.
pub fn splitmix64(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN_GAMMA))
}

/// SplitMix64 folded over `values`: `h₀ = 0`, `h ← splitmix64(h ⊕ v)` for every `v` in order.
///
/// This is the derivation of every per-purpose seed (`diem_em::derive_seed(seed, purpose, lap, index)` is
/// `fold_seeds(&[seed, purpose_tag, lap, index])`) and of the CIFAR preparation's chunk seeds. The empty
/// list gives 0.
pub fn fold_seeds(values: &[u64]) -> u64 {
    values.iter().fold(0, |h, &v| splitmix64(h ^ v))
}

/// Independent seeds for numbered streams of one seed: `mix64(seed ⊕ (stream·γ + c))` with
/// γ = [`GOLDEN_GAMMA`] and c = [`STREAM_OFFSET`] (wrapping). The fastMRI preparation's seeds for masks,
/// noise chunks and figures.
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ stream.wrapping_mul(GOLDEN_GAMMA).wrapping_add(STREAM_OFFSET))
}

/// A derived seed as libtorch's `manual_seed` argument: the top 63 bits, `seed ≫ 1`, always non-negative.
pub fn torch_seed(seed: u64) -> i64 {
    (seed >> 1) as i64
}

/// The host generator of every seeded draw: `StdRng::seed_from_u64(seed)` (rand 0.8's ChaCha12, seeded
/// through its own PCG expansion of `seed`).
pub fn host_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The SplitMix64 generator (Steele, Lea and Flood 2014): state `s ← s + γ`, output `mix64(s)`.
///
/// Small, fast and identical on every platform; diem uses it where the numbers must never change with a
/// dependency's version (the random manifold of the manifold experiment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator whose state starts at `seed` (its first output is `splitmix64(seed)`).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniform draw from `[0, 1)` with 53 random bits: `(next_u64() ≫ 11) · 2⁻⁵³`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `count` successive [`SplitMix64::uniform`] draws.
    pub fn uniforms(&mut self, count: usize) -> Vec<f64> {
        (0..count).map(|_| self.uniform()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    /// Values captured from the code these functions replaced (`diem_em::seed::derive_seed` with its purpose
    /// tags, `diem_fastmri::prepare::mix_seed`, the private SplitMix64 of `diem_models::randman`, and
    /// `StdRng::seed_from_u64` as `NoiseRng::seeded` used it), before the move. A change here changes
    /// every run diem has written.
    #[test]
    fn derived_values_are_frozen() {
        // diem_em::derive_seed(seed, purpose, lap, index) with the tags Init 1, GaussianChunk 2, EStepChunk 3,
        // MStep 4, Diagnostic 5, Observer 6, Validation 7.
        let cases: [([u64; 4], u64); 7] = [
            ([0, 1, 0, 0], 0xd1c0_2706_8798_4b37),
            ([7, 3, 3, 1], 0xb85f_07b9_0357_7faf),
            ([42, 4, 15, 0], 0x548a_f294_18f9_472f),
            ([u64::MAX, 7, 2, u64::MAX], 0x537b_52bb_8b19_5a46),
            ([12345, 6, u64::MAX, 0], 0x984d_4444_ed46_e242),
            ([1, 2, 4, 9], 0xd135_5763_21d1_43c5),
            ([99, 5, 0, 17], 0x299f_fbcf_4868_eeb7),
        ];
        for (values, want) in cases {
            assert_eq!(fold_seeds(&values), want, "{values:?}");
        }
        assert_eq!(torch_seed(0xd1c0_2706_8798_4b37), 7_557_061_629_226_788_251);
        assert_eq!(torch_seed(0x537b_52bb_8b19_5a46), 3_007_746_346_364_742_947);
        assert_eq!(torch_seed(u64::MAX), i64::MAX);

        // diem_fastmri::prepare::mix_seed(seed, stream).
        assert_eq!(stream_seed(0, 0), 0x8209_b480_faed_1b10);
        assert_eq!(stream_seed(7, 1), 0x71ee_efb4_62ee_8dfb);
        assert_eq!(stream_seed(2024, 3), 0x86e9_76ac_1f1b_0a93);
        assert_eq!(stream_seed(u64::MAX, 12), 0xae7f_aa27_c530_a8df);

        // Randman::sample_latents(3, 11): SplitMix64 from 11 ⊕ STREAM_OFFSET, three uniforms.
        let latents = SplitMix64::new(11 ^ STREAM_OFFSET).uniforms(3);
        let bits: Vec<u64> = latents.iter().map(|u| u.to_bits()).collect();
        assert_eq!(bits, [0x3fe3_fdf7_5cd6_d96d, 0x3fb8_2dc4_ed2c_5ee8, 0x3fd5_09cd_6d37_8f1a]);

        // NoiseRng::seeded(5) and the operators' generators.
        let mut rng = host_rng(5);
        assert_eq!([rng.next_u64(), rng.next_u64()], [0x5795_9a09_2dfb_197a, 0x01b1_b8fb_2e0c_c1f7]);
    }

    #[test]
    fn the_functions_agree_with_their_definitions() {
        // The generator's outputs are splitmix64 of its successive states.
        let mut g = SplitMix64::new(123);
        assert_eq!(g.next_u64(), splitmix64(123));
        assert_eq!(g.next_u64(), splitmix64(123u64.wrapping_add(GOLDEN_GAMMA)));
        // fold_seeds is a left fold: one more value is one more step.
        assert_eq!(fold_seeds(&[]), 0);
        assert_eq!(fold_seeds(&[9]), splitmix64(9));
        assert_eq!(fold_seeds(&[9, 4, 1]), splitmix64(fold_seeds(&[9, 4]) ^ 1));
        // Every argument matters, including its position.
        let base = fold_seeds(&[7, 3, 3, 1]);
        for other in [[8, 3, 3, 1], [7, 4, 3, 1], [7, 3, 4, 1], [7, 3, 3, 2], [7, 3, 1, 3]] {
            assert_ne!(fold_seeds(&other), base, "{other:?}");
        }
        assert_ne!(stream_seed(7, 1), stream_seed(7, 2));
        assert_ne!(stream_seed(7, 1), stream_seed(8, 1));
        // Uniforms lie in [0, 1).
        let u = SplitMix64::new(0).uniforms(1000);
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
