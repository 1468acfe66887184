//! The experiment's configuration and its presets (docs/method.md §9b, §7.4, §8).

use diem_em::{
    Covariance, DataStorage, DiagnosticsConfig, EStepConfig, EmConfig, GaussianEmConfig, LapOrder,
    PosteriorSpec, RefitConfig, SamplerSpec, SolverSpec, CONFIG_VERSION,
};
use diem_models::{LrConfig, NetworkConfig, TrainConfig, UNetConfig};
use serde::{Deserialize, Serialize};

use crate::error::{CifarError, Result};
use crate::format::IMAGE_BYTES;

/// Training images of the official set.
pub const CIFAR_TRAIN_IMAGES: usize = 50_000;

/// How every lap's prior is evaluated (docs/method.md §9b "Evaluation").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Prior samples for FID/IS (50,000 in the paper); only used with an Inception network.
    pub samples: usize,
    /// DDIM steps of every prior sample (256), started at `μ_x + σ(1) z = μ_x + 100 z`.
    pub prior_steps: usize,
    /// Samples per sampling chunk and images per Inception batch.
    pub batch: i64,
    /// Inception Score splits (10, torch-fidelity's default).
    pub splits: usize,
    /// Prior samples in each lap's grid (`lap-NNN/prior.png`).
    pub grid: usize,
    /// Observations shown with their posterior sample and ground truth (`lap-NNN/posterior.png`).
    pub posterior_grid: usize,
    /// Compute FID/IS every this many laps (and always at the last lap).
    pub every: usize,
}

impl EvalConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`CifarError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("eval.samples", self.samples),
            ("eval.prior_steps", self.prior_steps),
            ("eval.splits", self.splits),
            ("eval.grid", self.grid),
            ("eval.posterior_grid", self.posterior_grid),
            ("eval.every", self.every),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(CifarError::config(field, "must be ≥ 1"));
            }
        }
        if self.batch < 1 {
            return Err(CifarError::config("eval.batch", format!("must be ≥ 1, got {}", self.batch)));
        }
        if self.splits > self.samples {
            return Err(CifarError::config(
                "eval.splits",
                format!("must be ≤ eval.samples = {}, got {}", self.samples, self.splits),
            ));
        }
        Ok(())
    }
}

/// The synthetic data set of the `tiny` and `micro` presets (written in the exact CIFAR-10 binary format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Images in each of the five training files.
    pub train_per_file: usize,
    /// Test images.
    pub test: usize,
    /// The seed.
    pub seed: u64,
}

/// Everything about one corrupted CIFAR-10 run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CifarConfig {
    /// The preset's name (`paper`, `reduced`, `tiny`, `micro`), recorded in the report.
    pub preset: String,
    /// The deletion rate ρ.
    pub rho: f64,
    /// The seed of the masks and the observation noise (`diem-cifar prepare --seed`).
    pub data_seed: u64,
    /// Use only the first this many training observations (`None` = all 50,000).
    pub images: Option<usize>,
    /// Generate a synthetic data set in the CIFAR-10 format instead of reading the real one.
    pub synthetic: Option<SyntheticConfig>,
    /// The EM run.
    pub em: EmConfig,
    /// The evaluation.
    pub eval: EvalConfig,
}

/// The paper's E-step, Gaussian initialization and refit for `pairs` observations (docs/method.md §7.4, §8, §9b).
fn paper_em(laps: usize, network: UNetConfig, mstep: TrainConfig) -> EmConfig {
    let mut gaussian = GaussianEmConfig::spec(64, IMAGE_BYTES);
    gaussian.max_pairs = Some(16_384);
    EmConfig {
        version: CONFIG_VERSION,
        seed: 0,
        laps,
        order: LapOrder::SampleThenTrain,
        network: NetworkConfig::Unet(network),
        gaussian,
        estep: EStepConfig {
            samples_per_observation: 1,
            sampler: SamplerSpec::Ddpm { steps: 256 },
            posterior: PosteriorSpec::new(Covariance::Tweedie, SolverSpec::cg(1)).into(),
            chunk_size: 256,
            memory_budget_mib: None,
        },
        mstep,
        filter_bound: None,
        refit: Some(RefitConfig { rank: 64, samples: 16_384 }),
        diagnostics: DiagnosticsConfig { sinkhorn_subsample: Some(1024), sample_bound: None },
        progress: false,
        storage: DataStorage::Device,
    }
}

/// The M-step for `epochs` epochs of `images` images at batch `batch` (last partial batch dropped).
fn mstep(images: usize, batch: i64, epochs: usize) -> TrainConfig {
    let per_epoch = (images / batch.max(1) as usize).max(1);
    let mut t = TrainConfig::cifar(per_epoch * epochs);
    t.batch_size = batch;
    t.log_every = per_epoch;
    t
}

/// A small U-Net: `channels` per level, one block per level, attention with `heads` heads at level 1.
fn small_unet(channels: Vec<i64>, blocks: usize, heads: i64, embedding: i64) -> UNetConfig {
    let levels = channels.len();
    let mut head = vec![0; levels];
    if levels > 1 {
        head[1] = heads;
    }
    UNetConfig {
        channels,
        blocks: vec![blocks; levels],
        heads: head,
        embedding_features: embedding,
        ..UNetConfig::cifar()
    }
}

impl CifarConfig {
    /// The paper's configuration (docs/method.md §9b; GPU scale): all 50,000 training images, 32 laps; the CIFAR
    /// U-Net (57.6 M parameters); Adam constant lr 2e-4, clip 1, batch 256, EMA 0.9999, 256 epochs (49,920
    /// steps) per lap, flip + hue ±0.01 + saturation 0.95–1.05; E-step DDPM T = 256, MMPS with the Tweedie
    /// covariance and CG 1, from `μ_x + 100 z`; PPCA refit of μ_x (rank 64, 16,384 samples); Gaussian
    /// initialization rank 64 on the first 16,384 pairs (16 iterations, DDIM 256, CG to rtol 1e-3); FID/IS on
    /// 50,000 DDIM-256 samples, IS with 10 splits.
    pub fn paper(rho: f64) -> Self {
        Self {
            preset: "paper".into(),
            rho,
            data_seed: 0,
            images: None,
            synthetic: None,
            em: paper_em(32, UNetConfig::cifar(), mstep(CIFAR_TRAIN_IMAGES, 256, 256)),
            eval: EvalConfig {
                samples: 50_000,
                prior_steps: 256,
                batch: 500,
                splits: 10,
                grid: 64,
                posterior_grid: 8,
                every: 1,
            },
        }
    }

    /// A reduced configuration on the real data that runs on a CPU in tens of minutes to hours (a GPU runs
    /// it in minutes): the first 1,024 training images, 4 laps, a U-Net with channels (16, 32, 48), one block
    /// per level and 2 attention heads at level 1 (E = 64), 16 epochs of batch 64 per lap (256 steps) at a
    /// constant lr 5e-4 with EMA 0.99 (0.9999 averages over ~10,000 steps, far more than a short lap), DDPM
    /// T = 32, the Gaussian initialization of rank 16 (4 iterations, DDIM 32), refit rank 16, and 1,000
    /// DDIM-32 samples for FID/IS. Every other algorithmic choice is the paper's; only sizes shrink.
    pub fn reduced(rho: f64) -> Self {
        let images = 1024;
        let mut em = paper_em(4, small_unet(vec![16, 32, 48], 1, 2, 64), mstep(images, 64, 16));
        em.mstep.lr = LrConfig::constant(5e-4);
        em.mstep.ema_decay = Some(0.99);
        em.estep.sampler = SamplerSpec::Ddpm { steps: 32 };
        em.gaussian.rank = 16;
        em.gaussian.iterations = 4;
        em.gaussian.steps = 32;
        em.refit = Some(RefitConfig { rank: 16, samples: images });
        em.diagnostics.sinkhorn_subsample = Some(256);
        Self {
            preset: "reduced".into(),
            rho,
            data_seed: 0,
            images: Some(images),
            synthetic: None,
            em,
            eval: EvalConfig {
                samples: 1000,
                prior_steps: 32,
                batch: 250,
                splits: 10,
                grid: 64,
                posterior_grid: 8,
                every: 1,
            },
        }
    }

    /// The `--tiny` pipeline (1–3 minutes on one CPU thread in release): a synthetic data set in the CIFAR-10
    /// binary format (5 × 48 training images, 48 test images; read back from its `.tar.gz`), 2 laps, a U-Net
    /// with channels (8, 16), one block per level, one attention head at level 1 and E = 32 (31k
    /// parameters); 16 epochs of batch 32 per lap (112 steps) at lr 1e-3 with EMA 0.98; DDPM T = 16;
    /// Gaussian initialization rank 8 (2 iterations, DDIM 16); 192 DDIM-16 samples for FID/IS with 2 splits.
    /// It checks the plumbing end to end; its samples are not meant to look like the data.
    pub fn tiny(rho: f64) -> Self {
        let synthetic = SyntheticConfig { train_per_file: 48, test: 48, seed: 0 };
        let images = 5 * synthetic.train_per_file;
        let mut em = paper_em(2, small_unet(vec![8, 16], 1, 1, 32), mstep(images, 32, 16));
        em.mstep.lr = LrConfig::constant(1e-3);
        em.mstep.ema_decay = Some(0.98);
        em.estep.sampler = SamplerSpec::Ddpm { steps: 16 };
        em.estep.chunk_size = 160;
        em.gaussian = GaussianEmConfig {
            rank: 8,
            iterations: 2,
            steps: 16,
            solver: SolverSpec { iterations: 32, rtol: Some(1e-3), ..SolverSpec::cg(1) },
            max_pairs: None,
            stride: 1,
            chunk_size: 160,
        };
        em.refit = Some(RefitConfig { rank: 8, samples: images });
        em.diagnostics.sinkhorn_subsample = Some(128);
        Self {
            preset: "tiny".into(),
            rho,
            data_seed: 0,
            images: None,
            synthetic: Some(synthetic),
            em,
            eval: EvalConfig {
                samples: 192,
                prior_steps: 16,
                batch: 96,
                splits: 2,
                grid: 16,
                posterior_grid: 8,
                every: 1,
            },
        }
    }

    /// An even smaller variant of [`CifarConfig::tiny`] for integration tests (seconds): 5 × 8 training
    /// images, 1 lap of 10 steps at batch 8, DDPM T = 4, one Gaussian iteration of rank 4 with DDIM 4, and 16
    /// DDIM-4 samples for FID/IS.
    pub fn micro(rho: f64) -> Self {
        let mut c = Self::tiny(rho);
        c.preset = "micro".into();
        let synthetic = SyntheticConfig { train_per_file: 8, test: 8, seed: 0 };
        c.synthetic = Some(synthetic);
        let images = 5 * synthetic.train_per_file;
        c.em.laps = 1;
        c.em.mstep = TrainConfig { lr: c.em.mstep.lr, ema_decay: Some(0.9), ..mstep(images, 8, 2) };
        c.em.estep.sampler = SamplerSpec::Ddpm { steps: 4 };
        c.em.estep.chunk_size = 64;
        c.em.gaussian.rank = 4;
        c.em.gaussian.iterations = 1;
        c.em.gaussian.steps = 4;
        c.em.gaussian.chunk_size = 64;
        c.em.refit = Some(RefitConfig { rank: 4, samples: images });
        c.em.diagnostics.sinkhorn_subsample = None;
        c.eval = EvalConfig {
            samples: 16,
            prior_steps: 4,
            batch: 8,
            splits: 2,
            grid: 4,
            posterior_grid: 4,
            every: 1,
        };
        c
    }

    /// A preset by name: `paper`, `reduced`, `tiny`, `micro`.
    ///
    /// # Errors
    /// [`CifarError::Config`] for an unknown name.
    pub fn preset(name: &str, rho: f64) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper(rho)),
            "reduced" => Ok(Self::reduced(rho)),
            "tiny" => Ok(Self::tiny(rho)),
            "micro" => Ok(Self::micro(rho)),
            other => Err(CifarError::config(
                "preset",
                format!("unknown preset `{other}` (expected paper, reduced, tiny or micro)"),
            )),
        }
    }

    /// Sets the number of laps K (the M-step and E-step settings are per lap and unchanged).
    pub fn with_laps(mut self, laps: usize) -> Self {
        self.em.laps = laps;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`CifarError::Config`] naming the field; [`CifarError::Em`] for the EM section.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.rho) {
            return Err(CifarError::config("rho", format!("must lie in [0, 1), got {}", self.rho)));
        }
        if self.images == Some(0) {
            return Err(CifarError::config("images", "must be ≥ 1 (or null for all)"));
        }
        if let Some(s) = &self.synthetic {
            if s.train_per_file == 0 || s.test == 0 {
                return Err(CifarError::config(
                    "synthetic",
                    "needs ≥ 1 training image per file and ≥ 1 test image",
                ));
            }
        }
        match &self.em.network {
            NetworkConfig::Unet(u) if u.in_channels == 3 && u.out_channels == 3 => {}
            _ => {
                return Err(CifarError::config(
                    "em.network",
                    "must be a U-Net with 3 input and 3 output channels",
                ))
            }
        }
        self.eval.validate()?;
        Ok(self.em.validate()?)
    }
}
