//! Beyond the paper: full posterior samplers against the exact mixture posterior (docs/method.md §10.3) as the
//! dimension grows. For each d, a mixture prior on a random 1-D manifold in d dimensions is observed through
//! one `p × d` unit-row projection (p = d/2, at least 1); every method samples N posterior draws with the
//! analytic [`MixtureDenoiser`](diem_models::MixtureDenoiser) as its prior, and the Sinkhorn divergence
//! `max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)` against two independent exact posterior sets u1, u2 is reported.
//!
//! MMPS runs with its default solver safeguards (curvature fallback and observation-space damping) and, as
//! `mmps_cg*_unguarded`, without them.
//!
//! Base samplers: the denoiser-type methods (MMPS, heuristics, TMPD, PiGDM) run on DDIM; DPS is its own DDPM
//! sampler and DiffPIR runs on DDPM, the η = 1 sampler docs/method.md §5.6 prescribes for it. The components are
//! wider than Figure 2's (s = σ_y = 0.05 by default) so that a few dozen steps resolve the posterior.

use diem_linalg::Dplr;
use diem_metrics::Sinkhorn;
use diem_models::VeSchedule;
use diem_operators::{NoiseCov, Projection};
use diem_sampling::{
    Covariance, Ddim, Ddpm, DiffPirSpec, DpsSpec, Measurement, MmpsSpec, NoiseRng, PgdmSpec, PosteriorMethod,
    Sampler, SamplerSpec, SolverSpec, TimeGrid, TmpdSpec,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::mixture::{MixtureConfig, MixtureProblem};
use crate::random;

/// A posterior sampler of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepMethod {
    /// MMPS, Tweedie covariance, 1 CG iteration, on DDIM.
    Mmps1,
    /// MMPS, Tweedie covariance, 3 CG iterations, on DDIM.
    Mmps3,
    /// DPS (ζ = 1) on DDPM.
    Dps,
    /// TMPD (row sums, GMRES 5) on DDIM.
    Tmpd,
    /// PiGDM (GMRES 5) on DDIM.
    Pgdm,
    /// DiffPIR (λ = 8, GMRES 5) on DDIM.
    DiffPir,
    /// MMPS with the `zeros` heuristic (V = 0).
    Zeros,
    /// MMPS with the `cov_t` heuristic (V = σ_t² I).
    CovT,
    /// MMPS with the `ones` heuristic (V = σ_t²/(1 + σ_t²) I).
    Ones,
    /// MMPS with the `cov_x` heuristic, Σ_x the prior's exact covariance.
    CovX,
    /// MMPS, Tweedie covariance, 1 CG iteration, without the solver safeguards (the algorithm as written:
    /// plain CG, the correction as solved).
    Mmps1Unguarded,
    /// MMPS, Tweedie covariance, 3 CG iterations, without the solver safeguards.
    Mmps3Unguarded,
}

impl SweepMethod {
    /// Every method.
    pub const ALL: [Self; 12] = [
        Self::Mmps1,
        Self::Mmps3,
        Self::Mmps1Unguarded,
        Self::Mmps3Unguarded,
        Self::Dps,
        Self::Tmpd,
        Self::Pgdm,
        Self::DiffPir,
        Self::Zeros,
        Self::CovT,
        Self::Ones,
        Self::CovX,
    ];

    /// The CSV name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmps1 => "mmps_cg1",
            Self::Mmps3 => "mmps_cg3",
            Self::Dps => "dps",
            Self::Tmpd => "tmpd",
            Self::Pgdm => "pgdm",
            Self::DiffPir => "diffpir",
            Self::Zeros => "heuristic_zeros",
            Self::CovT => "heuristic_cov_t",
            Self::Ones => "heuristic_ones",
            Self::CovX => "heuristic_cov_x",
            Self::Mmps1Unguarded => "mmps_cg1_unguarded",
            Self::Mmps3Unguarded => "mmps_cg3_unguarded",
        }
    }
}

impl SweepMethod {
    /// The method in the posterior vocabulary: MMPS (default safeguards unless unguarded) with 1 or 3 CG
    /// iterations, the heuristics with 1 (`zeros`) or 3 iterations, and the baselines with their defaults
    /// (DPS ζ = 1; TMPD, PiGDM GMRES 5; DiffPIR λ = 8, GMRES 5).
    pub fn posterior(self) -> PosteriorMethod {
        let mmps = |covariance, n| PosteriorMethod::Mmps(MmpsSpec::new(covariance, SolverSpec::cg(n)));
        match self {
            Self::Mmps1 => mmps(Covariance::Tweedie, 1),
            Self::Mmps3 => mmps(Covariance::Tweedie, 3),
            Self::Mmps1Unguarded => mmps(Covariance::Tweedie, 1).without_safeguards(),
            Self::Mmps3Unguarded => mmps(Covariance::Tweedie, 3).without_safeguards(),
            Self::Zeros => mmps(Covariance::Zeros, 1),
            Self::CovT => mmps(Covariance::CovT, 3),
            Self::Ones => mmps(Covariance::Ones, 3),
            Self::CovX => mmps(Covariance::CovX, 3),
            Self::Dps => PosteriorMethod::Dps(DpsSpec::default()),
            Self::Tmpd => PosteriorMethod::Tmpd(TmpdSpec::default()),
            Self::Pgdm => PosteriorMethod::Pgdm(PgdmSpec::default()),
            Self::DiffPir => PosteriorMethod::DiffPir(DiffPirSpec::default()),
        }
    }
}

/// Sizes of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Dimensions d.
    pub dims: Vec<i64>,
    /// Mixture components Kc.
    pub components: i64,
    /// Component standard deviation s.
    pub std: f64,
    /// Observation noise σ_y.
    pub sigma_y: f64,
    /// Number of seeds per dimension.
    pub seeds: u64,
    /// Posterior samples per method (and per exact set).
    pub samples: i64,
    /// Sampler steps T.
    pub steps: usize,
    /// The sampler of the denoiser-type methods by its [`SamplerSpec::NAMES`] name (e.g. `"heun"`,
    /// `"dpmpp2m"`); `None` (the default, and what older files mean) is DDIM. DPS and DiffPIR keep DDPM. The
    /// comparison is at equal steps: Heun makes two calls per step.
    #[serde(default)]
    pub sampler: Option<String>,
    /// Sinkhorn iteration cap.
    pub sinkhorn_max_iter: usize,
}

impl Default for SweepConfig {
    /// Reduced sizes for a CPU: 2 seeds, 128 samples, 64 steps (about 5 minutes on 2 cores).
    fn default() -> Self {
        Self {
            dims: vec![2, 4, 8, 16, 32, 64],
            components: 256,
            std: 0.05,
            sigma_y: 0.05,
            seeds: 2,
            samples: 128,
            steps: 64,
            sampler: None,
            sinkhorn_max_iter: 1024,
        }
    }
}

impl SweepConfig {
    /// Larger sizes (GPU scale): 16 seeds, 4,096 samples, 256 steps.
    pub fn full() -> Self {
        Self { seeds: 16, samples: 4096, steps: 256, ..Self::default() }
    }

    /// The mixture problem for dimension `d`.
    pub fn problem(&self, d: i64) -> MixtureConfig {
        MixtureConfig {
            ambient_dim: d,
            components: self.components,
            std: self.std,
            obs_dim: (d / 2).max(1),
            sigma_y: self.sigma_y,
        }
    }
}

/// One measured divergence of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    /// Dimension d.
    pub dim: i64,
    /// Seed.
    pub seed: u64,
    /// Method.
    pub method: SweepMethod,
    /// Sinkhorn divergence to the exact posterior.
    pub divergence: f64,
}

fn sampling<T>(what: &str, r: std::result::Result<T, diem_sampling::SamplingError>) -> Result<T> {
    r.map_err(|e| BenchError::config(what, e.to_string()))
}

/// Draws `n` posterior samples `[n, d]` with `method` for the problem (float64, CPU), the denoiser-type
/// methods on DDIM ([`sample_posterior_with`] takes another sampler).
///
/// # Errors
/// Sampler or guidance errors (reported with the method's name).
pub fn sample_posterior(
    problem: &MixtureProblem,
    method: SweepMethod,
    n: i64,
    steps: usize,
    seed: u64,
) -> Result<Tensor> {
    sample_posterior_with(problem, method, n, steps, seed, None)
}

/// [`sample_posterior`] with the denoiser-type methods on the sampler named `sampler` (a
/// [`SamplerSpec::NAMES`] name; `None` = DDIM). DPS and DiffPIR run on DDPM whatever the name.
///
/// # Errors
/// An unknown sampler name; sampler or guidance errors (reported with the method's name).
pub fn sample_posterior_with(
    problem: &MixtureProblem,
    method: SweepMethod,
    n: i64,
    steps: usize,
    seed: u64,
    sampler: Option<&str>,
) -> Result<Tensor> {
    let prior = problem.denoiser()?;
    let d = problem.config.ambient_dim;
    let op = Projection::new(problem.w.unsqueeze(0), &[d])
        .map_err(|e| BenchError::config("projection", e.to_string()))?;
    let y = problem.y.unsqueeze(0).expand([n, problem.config.obs_dim], false).contiguous();
    let noise = NoiseCov::isotropic(problem.config.sigma_y)
        .map_err(|e| BenchError::config("sigma_y", e.to_string()))?;
    let schedule = VeSchedule::manifold();
    let grid = sampling("steps", TimeGrid::uniform(steps))?;
    // DPS and DiffPIR run on DDPM (η = 1, as their papers), the others on DDIM or the sampler named.
    let sampler: Box<dyn Sampler> = match (method, sampler) {
        (SweepMethod::Dps | SweepMethod::DiffPir, _) => Box::new(Ddpm::new(schedule, grid)),
        (_, None) => Box::new(Ddim::new(schedule, grid)),
        (_, Some(name)) => {
            sampling("sampler", SamplerSpec::from_name(name, steps).and_then(|s| s.build(schedule)))?
        }
    };
    let mut rng = NoiseRng::seeded(seed);
    let name = method.name();
    let (kind, dev) = (Kind::Double, Device::Cpu);
    let posterior = method.posterior();
    let sigma_x = if posterior.needs_sigma_x() {
        let centres = prior.centres();
        let kc = centres.size()[0];
        let centred = (centres - centres.mean_dim(0, true, kind)) / (kc as f64).sqrt();
        let diag = Tensor::full([d], problem.config.std.powi(2), (kind, dev));
        let cov = Dplr::new(diag, Some(centred.tr().contiguous()), Some(centred.contiguous()))
            .map_err(|e| BenchError::config("cov_x", e.to_string()))?;
        Some(cov)
    } else {
        None
    };
    let measurement = sampling(name, Measurement::new(&op, &y, noise))?;
    let (x, _) = sampling(
        name,
        posterior.sample(&prior, measurement, sigma_x.as_ref(), sampler.as_ref(), (kind, dev), &mut rng),
    )?;
    Ok(x)
}

/// Runs `methods` on one (dimension, seed) problem.
///
/// # Errors
/// Problem, sampler or Sinkhorn errors.
pub fn run_one(config: &SweepConfig, d: i64, seed: u64, methods: &[SweepMethod]) -> Result<Vec<SweepRecord>> {
    let problem = MixtureProblem::generate(&config.problem(d), seed)?;
    let posterior = problem.posterior();
    let mut rng = random::stream(seed, 9);
    let u1 = posterior.sample(&mut rng, config.samples, 0.0)?;
    let u2 = posterior.sample(&mut rng, config.samples, 0.0)?;
    let sinkhorn = Sinkhorn { max_iter: config.sinkhorn_max_iter, ..Sinkhorn::default() };
    let baseline = sinkhorn.ot(&u1, &u2)?.cost;
    let mut out = Vec::new();
    for &method in methods {
        let v = sample_posterior_with(
            &problem,
            method,
            config.samples,
            config.steps,
            seed,
            config.sampler.as_deref(),
        )?;
        // A diverged sampler (non-finite samples) is recorded as NaN: kept in the raw CSV, left out of medians.
        let divergence = if bool::try_from(v.isfinite().all())? {
            (sinkhorn.ot(&u1, &v)?.cost - baseline).max(diem_metrics::DIVERGENCE_FLOOR)
        } else {
            f64::NAN
        };
        out.push(SweepRecord { dim: d, seed, method, divergence });
    }
    Ok(out)
}
