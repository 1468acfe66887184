//! The manifold experiment's configuration and its presets (docs/method.md §9a, §13).

use diem_models::{MlpConfig, NetworkConfig};
use serde::{Deserialize, Serialize};

use crate::error::{ManifoldError, Result};
use diem_em::config::{EmConfig, SamplerSpec};

/// How the data are generated (docs/method.md §9a).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Seed of every draw (manifold, latents, projections, noise).
    pub seed: u64,
    /// Number of ground-truth points and observations S (65,536 in the paper).
    pub points: i64,
    /// Manifold dimension m (1).
    pub manifold_dim: i64,
    /// Ambient dimension n (5).
    pub ambient_dim: i64,
    /// Rows of each projection A_i (2).
    pub observed_dim: i64,
    /// Observation noise σ_y (1e-2).
    pub noise_std: f64,
}

impl DataConfig {
    /// docs/method.md §9a with `points` observations: m = 1, n = 5, A_i ∈ R^{2×5}, σ_y = 1e-2.
    pub fn with_points(points: i64) -> Self {
        Self { seed: 0, points, manifold_dim: 1, ambient_dim: 5, observed_dim: 2, noise_std: 1e-2 }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("data.points", self.points),
            ("data.manifold_dim", self.manifold_dim),
            ("data.ambient_dim", self.ambient_dim),
            ("data.observed_dim", self.observed_dim),
        ];
        for (field, v) in positive {
            if v < 1 {
                return Err(ManifoldError::config(field, format!("must be ≥ 1, got {v}")));
            }
        }
        if !(self.noise_std.is_finite() && self.noise_std > 0.0) {
            return Err(ManifoldError::config(
                "data.noise_std",
                format!("must be finite and > 0, got {}", self.noise_std),
            ));
        }
        Ok(())
    }
}

/// How every prior (the initial Gaussian and each lap's model) is evaluated (docs/method.md §9a "Metric").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Points on each side of the transport problems (u1, u2 and the prior samples v); 16,384 in the paper.
    pub points: i64,
    /// Entropic regularization λ on the squared-distance cost (1e-3 in the paper).
    pub lambda: f64,
    /// Sinkhorn iteration cap (1024).
    pub max_iter: usize,
    /// Column-marginal tolerance (1e-3).
    pub tol: f64,
    /// Steps of the predictor-corrector sampler (C and τ as the E-step) that draws the prior samples.
    pub prior_steps: usize,
}

impl MetricConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(ManifoldError::config("metric.lambda", format!("must be > 0, got {}", self.lambda)));
        }
        if self.max_iter == 0 {
            return Err(ManifoldError::config("metric.max_iter", "must be ≥ 1"));
        }
        if self.prior_steps == 0 {
            return Err(ManifoldError::config("metric.prior_steps", "must be ≥ 1"));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(ManifoldError::config("metric.tol", format!("must be > 0, got {}", self.tol)));
        }
        Ok(())
    }
}

/// Everything about one manifold experiment: the data, the EM run and the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifoldConfig {
    /// The preset's name (`paper`, `reference`, `demo`, `tiny`), recorded in the report.
    pub preset: String,
    /// Data generation.
    pub data: DataConfig,
    /// The EM run (its `seed` drives the network initialization, sampler noise and batches).
    pub em: EmConfig,
    /// Evaluation.
    pub metric: MetricConfig,
}

impl ManifoldConfig {
    /// The paper's configuration (docs/method.md §9a, Table 2; GPU scale): 65,536 observations, 32 laps of 65,536
    /// steps at batch 1024, the 3×256 MLP, PC with T = 4096, C = 1, τ = 0.1, the Tweedie covariance with
    /// CG 3, and the 16,384-point Sinkhorn at λ = 1e-3.
    pub fn paper() -> Self {
        let mut em = EmConfig::manifold(32);
        em.estep.chunk_size = 16_384;
        em.gaussian.chunk_size = 16_384;
        Self {
            preset: "paper".into(),
            data: DataConfig::with_points(65_536),
            em,
            metric: MetricConfig {
                points: 16_384,
                lambda: 1e-3,
                max_iter: 1024,
                tol: 1e-3,
                prior_steps: 4096,
            },
        }
    }

    /// The reference code's configuration (docs/method.md §13): the paper's data and metric with 64 laps and the
    /// `cov_x` heuristic (the fixed Gaussian-fit covariance) solved by CG to rtol 1e-3.
    pub fn reference() -> Self {
        let mut c = Self::paper();
        let chunk = c.em.estep.chunk_size;
        c.preset = "reference".into();
        c.em = EmConfig::manifold_reference(64);
        c.em.estep.chunk_size = chunk;
        c.em.gaussian.chunk_size = chunk;
        c
    }

    /// The reduced CPU configuration of `cargo xtask demo` (minutes on 2 cores). What is reduced, and why,
    /// is listed in the module documentation.
    pub fn demo() -> Self {
        let mut c = Self::paper();
        c.preset = "demo".into();
        c.data = DataConfig::with_points(4096);
        c.em.laps = 16;
        c.em.network = NetworkConfig::Mlp(MlpConfig {
            features: 5,
            hidden: vec![128, 128, 128],
            embedding_features: 64,
        });
        c.em.mstep.steps = 4096;
        c.em.mstep.batch_size = 256;
        c.em.estep.sampler = SamplerSpec::Pc { steps: 32, corrections: 1, tau: 0.1 };
        c.em.estep.chunk_size = 4096;
        c.em.gaussian.steps = 32;
        c.em.gaussian.chunk_size = 4096;
        c.em.diagnostics.sinkhorn_subsample = None;
        c.metric = MetricConfig { points: 1024, lambda: 0.25, max_iter: 1024, tol: 1e-3, prior_steps: 128 };
        c
    }

    /// A tiny configuration for tests (seconds in the dev profile).
    pub fn tiny() -> Self {
        let mut c = Self::demo();
        c.preset = "tiny".into();
        c.data = DataConfig::with_points(128);
        c.em.laps = 1;
        c.em.network =
            NetworkConfig::Mlp(MlpConfig { features: 5, hidden: vec![16, 16], embedding_features: 8 });
        c.em.mstep.steps = 8;
        c.em.mstep.batch_size = 32;
        c.em.mstep.log_every = 4;
        c.em.estep.sampler = SamplerSpec::Pc { steps: 4, corrections: 1, tau: 0.1 };
        c.em.estep.chunk_size = 64;
        c.em.gaussian.iterations = 2;
        c.em.gaussian.steps = 4;
        c.em.gaussian.chunk_size = 64;
        c.metric = MetricConfig { points: 48, lambda: 0.1, max_iter: 64, tol: 1e-3, prior_steps: 4 };
        c
    }

    /// A preset by name: `paper`, `reference` (alias `ref`), `demo`, `tiny`.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] for an unknown name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "reference" | "ref" => Ok(Self::reference()),
            "demo" => Ok(Self::demo()),
            "tiny" => Ok(Self::tiny()),
            other => Err(ManifoldError::config(
                "preset",
                format!("unknown preset `{other}` (expected paper, reference, demo or tiny)"),
            )),
        }
    }

    /// Checks every field, including that the network's features equal the ambient dimension and that the
    /// metric's sets fit the data disjointly.
    ///
    /// # Errors
    /// [`ManifoldError::Config`] naming the field; [`ManifoldError::Em`] for the EM section.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.metric.validate()?;
        self.em.validate()?;
        if self.metric.points < 2 || 2 * self.metric.points > self.data.points {
            return Err(ManifoldError::config(
                "metric.points",
                format!(
                    "must lie in [2, data.points / 2] = [2, {}] (u1 and u2 are disjoint), got {}",
                    self.data.points / 2,
                    self.metric.points
                ),
            ));
        }
        if let NetworkConfig::Mlp(mlp) = &self.em.network {
            if mlp.features != self.data.ambient_dim {
                return Err(ManifoldError::config(
                    "em.network.mlp.features",
                    format!("must equal data.ambient_dim = {}, got {}", self.data.ambient_dim, mlp.features),
                ));
            }
        }
        Ok(())
    }
}
