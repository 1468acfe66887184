//! The experiment's configuration and its presets (docs/method.md §9c, §7.4, §8).

use diem_em::{
    Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, GaussianEmConfig, LapOrder,
    PosteriorSpec, RefitConfig, SamplerSpec, SolverSpec, CONFIG_VERSION,
};
use diem_models::{NetworkConfig, TrainConfig, UNetConfig};
use serde::{Deserialize, Serialize};

use crate::error::{FastMriError, Result};
use crate::prepare::PrepareConfig;

/// The synthetic data a preset runs on when no `--data` is given (see [`crate::make_fixture`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSpec {
    /// Volumes (the last one becomes the validation split).
    pub volumes: usize,
    /// Slices per volume.
    pub slices: usize,
    /// Image side.
    pub size: usize,
    /// Seed of the phantoms.
    pub seed: u64,
}

/// The per-lap figures and diagnostics of [`crate::MriObserver`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureConfig {
    /// Held-out (validation) images whose posteriors are drawn every lap.
    pub heldout: i64,
    /// Accelerations R of their observations (the paper shows several).
    pub accelerations: Vec<f64>,
    /// Prior samples drawn every lap.
    pub prior_samples: i64,
    /// Posterior samples per held-out observation.
    pub posterior_samples: usize,
    /// Pixel enlargement in the PNGs.
    pub scale: u32,
}

/// Everything about one fastMRI reproduction: data preparation, the EM run and the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastMriConfig {
    /// The preset's name (`paper`, `tiny`, `micro`).
    pub preset: String,
    /// Epochs per lap; the M-step's steps are `epochs · ⌊k N / batch⌋` ([`FastMriConfig::em_for`]).
    pub epochs_per_lap: usize,
    /// How raw HDF5 data are prepared when `--data` names a raw folder (or the fixture).
    pub prepare: PrepareConfig,
    /// The synthetic data used when no data are given (`None`: data are required).
    pub fixture: Option<FixtureSpec>,
    /// The EM run; `mstep.steps` is replaced by [`FastMriConfig::em_for`].
    pub em: EmConfig,
    /// The per-lap figures.
    pub figures: FigureConfig,
}

impl FastMriConfig {
    /// The paper's configuration (docs/method.md §9c, §7.4, §8; GPU scale): [`UNetConfig::mri`] (space-to-depth 4,
    /// 77.6 M parameters), Adam with constant lr 1e-4, clip 1, batch 256, EMA 0.999, 64 epochs per lap,
    /// 16 laps, h-flip + ±4 px reflect-pad-and-crop; E-step: 2 posterior samples per observation, DDPM 64,
    /// MMPS with the Tweedie covariance and CG 3, start `μ_x + 100 z` with μ_x refitted by PPCA (rank 64 on
    /// the first 16,384 samples) after every E-step; Gaussian init: rank 64 on 4,096 pairs, 16 iterations,
    /// DDIM 256, CG 5. Data: R = 6, σ_y = 1e-2, slices 10..=40, max normalization.
    pub fn paper() -> Self {
        let em = EmConfig {
            version: CONFIG_VERSION,
            seed: 0,
            laps: 16,
            order: LapOrder::SampleThenTrain,
            network: NetworkConfig::Unet(UNetConfig::mri()),
            gaussian: GaussianEmConfig {
                rank: 64,
                iterations: 16,
                steps: 256,
                solver: SolverSpec::cg(5),
                // Every 4th of the first 16,384 pairs: 4,096 pairs (docs/method.md §9c).
                max_pairs: Some(16_384),
                stride: 4,
                chunk_size: 256,
            },
            estep: EStepConfig {
                samples_per_observation: 2,
                sampler: SamplerSpec::Ddpm { steps: 64 },
                posterior: PosteriorSpec::new(Covariance::Tweedie, SolverSpec::cg(3)).into(),
                chunk_size: 64,
                memory_budget_mib: None,
            },
            mstep: TrainConfig::mri(1),
            filter_bound: None,
            refit: Some(RefitConfig { rank: 64, samples: 16_384 }),
            diagnostics: DiagnosticsConfig { sinkhorn_subsample: None, sample_bound: None },
            progress: false,
            // About 25 GB of observations and 25 GB of samples at paper scale: they stay in host memory and
            // move to the GPU chunk by chunk (E-step) and batch by batch (M-step).
            storage: DataStorage::Host,
        };
        Self {
            preset: "paper".into(),
            epochs_per_lap: 64,
            prepare: PrepareConfig::default(),
            fixture: None,
            em,
            figures: FigureConfig {
                heldout: 2,
                accelerations: vec![4.0, 6.0, 8.0, 10.0],
                prior_samples: 4,
                posterior_samples: 2,
                scale: 1,
            },
        }
    }

    /// A CPU-sized configuration (1–3 minutes in release on 2 cores) on the synthetic fixture (3 volumes of
    /// 44 slices of 32×32; 62 training and 31 validation slices): a tiny U-Net that keeps the
    /// space-to-depth-4 path (channels (16, 32), one block per level, 2 attention heads at the 4×4 level,
    /// E = 16), 3 laps of 150 epochs at batch 32 (450 steps), lr 1e-3 and EMA 0.99 (the paper's 1e-4 and
    /// 0.999 barely move in 450 steps), DDPM 16, Gaussian init of rank 8 on 64 pairs with 4 iterations of
    /// DDIM 16. Every other choice is the paper's.
    pub fn tiny() -> Self {
        let mut c = Self::paper();
        c.preset = "tiny".into();
        c.epochs_per_lap = 150;
        c.fixture = Some(FixtureSpec { volumes: 3, slices: 44, size: 32, seed: 0 });
        c.em.laps = 3;
        c.em.network = NetworkConfig::Unet(UNetConfig {
            channels: vec![16, 32],
            blocks: vec![1, 1],
            heads: vec![0, 2],
            embedding_features: 16,
            ..UNetConfig::mri()
        });
        c.em.gaussian = GaussianEmConfig {
            rank: 8,
            iterations: 4,
            steps: 16,
            solver: SolverSpec::cg(5),
            max_pairs: Some(64),
            stride: 1,
            chunk_size: 256,
        };
        c.em.estep.sampler = SamplerSpec::Ddpm { steps: 16 };
        c.em.estep.chunk_size = 256;
        c.em.refit = Some(RefitConfig { rank: 8, samples: 16_384 });
        c.em.mstep.batch_size = 32;
        c.em.mstep.lr = diem_models::LrConfig::constant(1e-3);
        c.em.mstep.ema_decay = Some(0.99);
        c.em.mstep.log_every = 25;
        c.prepare.size_multiple = size_multiple(&c.em.network);
        c.figures.scale = 3;
        c
    }

    /// The smallest configuration, for tests (seconds in the dev profile): 3 volumes of 14 slices of 16×16
    /// (slices 10..=13 kept: 8 training and 4 validation slices), channels (4, 8), no attention, 1 lap of 2
    /// epochs at batch 8, DDPM 4, one Gaussian iteration of DDIM 4 at rank 4, figures at R = 4 and 8.
    pub fn micro() -> Self {
        let mut c = Self::tiny();
        c.preset = "micro".into();
        c.epochs_per_lap = 2;
        c.fixture = Some(FixtureSpec { volumes: 3, slices: 14, size: 16, seed: 0 });
        c.em.laps = 1;
        c.em.network = NetworkConfig::Unet(UNetConfig {
            channels: vec![4, 8],
            blocks: vec![1, 1],
            heads: vec![0, 0],
            embedding_features: 8,
            ..UNetConfig::mri()
        });
        c.em.gaussian.rank = 4;
        c.em.gaussian.iterations = 1;
        c.em.gaussian.steps = 4;
        c.em.gaussian.max_pairs = Some(8);
        c.em.estep.sampler = SamplerSpec::Ddpm { steps: 4 };
        c.em.refit = Some(RefitConfig { rank: 4, samples: 16_384 });
        c.em.mstep.batch_size = 8;
        c.em.mstep.log_every = 1;
        c.figures = FigureConfig {
            heldout: 1,
            accelerations: vec![4.0, 8.0],
            prior_samples: 2,
            posterior_samples: 2,
            scale: 2,
        };
        c
    }

    /// A preset by name: `paper`, `tiny` or `micro`.
    ///
    /// # Errors
    /// [`FastMriError::Config`] for an unknown name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "tiny" => Ok(Self::tiny()),
            "micro" => Ok(Self::micro()),
            other => Err(FastMriError::config(
                "preset",
                format!("unknown preset `{other}` (expected paper, tiny or micro)"),
            )),
        }
    }

    /// The M-step steps of one lap for `observations` pairs: `epochs · ⌊k N / batch⌋` (shuffled epochs, the
    /// last partial batch dropped; at least 1).
    pub fn steps_per_lap(&self, observations: i64) -> usize {
        let samples = observations.max(0) as usize * self.em.estep.samples_per_observation;
        let per_epoch = samples / self.em.mstep.batch_size.max(1) as usize;
        (self.epochs_per_lap * per_epoch).max(1)
    }

    /// The EM configuration for `observations` training pairs ([`FastMriConfig::steps_per_lap`] steps per
    /// lap).
    pub fn em_for(&self, observations: i64) -> EmConfig {
        let mut em = self.em.clone();
        em.mstep.steps = self.steps_per_lap(observations);
        em
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`FastMriError::Config`] naming the field; EM validation errors.
    pub fn validate(&self) -> Result<()> {
        self.em.validate()?;
        if self.epochs_per_lap == 0 {
            return Err(FastMriError::config("epochs_per_lap", "must be ≥ 1"));
        }
        let f = &self.figures;
        if f.heldout < 1 || f.prior_samples < 1 || f.posterior_samples < 1 || f.scale < 1 {
            return Err(FastMriError::config("figures", format!("counts and scale must be ≥ 1, got {f:?}")));
        }
        if f.accelerations.is_empty() || f.accelerations.iter().any(|r| !(r.is_finite() && *r >= 1.0)) {
            return Err(FastMriError::config(
                "figures.accelerations",
                format!("needs at least one R ≥ 1, got {:?}", f.accelerations),
            ));
        }
        if !matches!(self.em.network, NetworkConfig::Unet(_)) {
            return Err(FastMriError::config("em.network", "the MRI experiment needs a U-Net"));
        }
        Ok(())
    }
}

/// The image-side multiple a network needs (`patch · 2^(L−1)` for a U-Net, 1 otherwise).
pub fn size_multiple(network: &NetworkConfig) -> i64 {
    match network {
        NetworkConfig::Unet(u) => u.size_multiple(),
        NetworkConfig::Mlp(_) | NetworkConfig::Custom(_) => 1,
    }
}
