//! Seed derivation for EM runs: one run seed, and a derived seed for every lap, E-step chunk and M-step, so a
//! resumed run draws exactly what the uninterrupted run drew.
//!
//! The derivation itself lives in [`diem_operators::seed`], the one seed module of the workspace; this module
//! names the EM purposes ([`SeedPurpose`]) and re-exports [`torch_seed`].

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
    /// The validation set of a lap: its E-step chunks and the fixed noise of its loss (docs/method.md §8).
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

pub use diem_operators::seed::torch_seed;

/// The seed for `purpose` at (`lap`, `index`) of the run seeded `seed`: SplitMix64 folded over the four
/// numbers, `fold_seeds(&[seed, tag, lap, index])` ([`diem_operators::seed::fold_seeds`]) with the purpose's
/// tag (`Init` 1, `GaussianChunk` 2, `EStepChunk` 3, `MStep` 4, `Diagnostic` 5, `Observer` 6, `Validation` 7).
/// Different arguments give (with overwhelming probability) unrelated seeds.
pub fn derive_seed(seed: u64, purpose: SeedPurpose, lap: u64, index: u64) -> u64 {
    diem_operators::seed::fold_seeds(&[seed, purpose.tag(), lap, index])
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

    /// Values captured before the derivation moved to `diem_operators::seed`: every tag keeps its number.
    #[test]
    fn derived_seeds_are_frozen() {
        use SeedPurpose::*;
        let cases = [
            (0, Init, 0, 0, 0xd1c0_2706_8798_4b37),
            (7, EStepChunk, 3, 1, 0xb85f_07b9_0357_7faf),
            (42, MStep, 15, 0, 0x548a_f294_18f9_472f),
            (u64::MAX, Validation, 2, u64::MAX, 0x537b_52bb_8b19_5a46),
            (12345, Observer, u64::MAX, 0, 0x984d_4444_ed46_e242),
            (1, GaussianChunk, 4, 9, 0xd135_5763_21d1_43c5),
            (99, Diagnostic, 0, 17, 0x299f_fbcf_4868_eeb7),
        ];
        for (seed, purpose, lap, index, want) in cases {
            assert_eq!(derive_seed(seed, purpose, lap, index), want, "{purpose:?}");
        }
        assert_eq!(torch_seed(0xd1c0_2706_8798_4b37), 7_557_061_629_226_788_251);
    }
}
