//! Seed derivation (DESIGN.md "Reproducibility"): one run seed, and a derived seed for every lap, E-step chunk
//! and M-step, so a resumed run draws exactly what the uninterrupted run drew.

/// The role a derived seed is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedPurpose {
    /// The network's initialization.
    Init,
    /// One chunk of a Gaussian-EM E-step (`iteration`, `chunk`).
    GaussianChunk,
    /// One chunk of a lap's E-step.
    EStepChunk,
    /// A lap's M-step (batch indices, diffusion times and noise: libtorch's generator).
    MStep,
    /// A lap's observation-space diagnostic (re-simulated noise).
    Diagnostic,
    /// Free for experiments' observers.
    Observer,
    /// The validation set of a lap: its E-step chunks and the fixed noise of its loss (SPEC.md §8).
    Validation,
}

impl SeedPurpose {
    fn tag(self) -> u64 {
        match self {
            Self::Init => 1,
            Self::GaussianChunk => 2,
            Self::EStepChunk => 3,
            Self::MStep => 4,
            Self::Diagnostic => 5,
            Self::Observer => 6,
            Self::Validation => 7,
        }
    }
}

/// One SplitMix64 step: a bijective 64-bit mix.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed for `purpose` at (`lap`, `index`) of the run seeded `seed`: SplitMix64 folded over the four
/// numbers. Different arguments give (with overwhelming probability) unrelated seeds.
pub fn derive_seed(seed: u64, purpose: SeedPurpose, lap: u64, index: u64) -> u64 {
    let mut h = splitmix64(seed);
    for v in [purpose.tag(), lap, index] {
        h = splitmix64(h ^ v);
    }
    h
}

/// A derived seed as libtorch's `manual_seed` argument (non-negative `i64`).
pub fn torch_seed(seed: u64) -> i64 {
    (seed >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        let a = derive_seed(7, SeedPurpose::EStepChunk, 3, 1);
        assert_eq!(a, derive_seed(7, SeedPurpose::EStepChunk, 3, 1));
        let others = [
            derive_seed(8, SeedPurpose::EStepChunk, 3, 1),
            derive_seed(7, SeedPurpose::MStep, 3, 1),
            derive_seed(7, SeedPurpose::EStepChunk, 4, 1),
            derive_seed(7, SeedPurpose::EStepChunk, 3, 2),
            derive_seed(7, SeedPurpose::EStepChunk, 1, 3),
        ];
        assert!(others.iter().all(|&o| o != a));
        assert!(torch_seed(u64::MAX) >= 0);
    }
}
