//! Accuracy per second against azula (issue 14): for each posterior sampler and step count, the Sinkhorn
//! divergence to the exact mixture posterior (docs/method.md §10.3) against wall time and network evaluations,
//! for diem's samplers and for azula 0.11.1's on the same problem. Run by `cargo xtask sweep --frontier`.
//!
//! The problem is the sweep's ([`crate::sweep`]): a mixture of `Kc` isotropic Gaussians on a random 1-D
//! manifold in `d` dimensions, observed through one `p × d` unit-row projection, `p = d/2`, with noise σ_y.
//! [`FrontierProblem::export`] writes everything the other side needs (centres, s, W, y, σ_y and the two exact
//! posterior sets `u1`, `u2`) to one safetensors file; `benches/python/azula_frontier.py` rebuilds the
//! closed-form mixture denoiser in torch, samples with azula and writes its samples back; [`report`] then
//! computes the divergence of every sample set, diem's and azula's alike, with [`FrontierProblem::divergence`]:
//!
//! ```text
//! S(v) = max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)     (entropic OT, λ = 1e-3, as the sweep)
//! ```
//!
//! diem's methods: MMPS (Tweedie covariance, 1 or 3 CG iterations, default safeguards) on DDIM, DDPM, Euler,
//! Heun and DPM-Solver++(2M), and TDS (Tweedie twist, K particles) on DDPM. azula's: `MMPSDenoiser` (CG, 1 or 3
//! iterations) on `DDIMSampler` and `DDPMSampler`. Each run is timed around the sampling call only; a run of a
//! few steps warms each process up first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use diem_metrics::Sinkhorn;
use diem_models::VeSchedule;
use diem_operators::{NoiseCov, Projection};
use diem_sampling::{
    Covariance, Ddpm, Measurement, MmpsSpec, NoiseRng, PosteriorMethod, Sampler, SamplerSpec, SolverSpec,
    TdsSpec, TimeGrid,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::mixture::{MixtureConfig, MixtureProblem};
use crate::random;
use crate::stats::{quantile, write_atomic, write_csv};

/// The implementation a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Implementation {
    /// diem (this workspace), in the `frontier` binary's process.
    Diem,
    /// azula 0.11.1, in `benches/python/azula_frontier.py` (or any external sampler writing the same files).
    Azula,
}

impl Implementation {
    /// `"diem"` or `"azula"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Diem => "diem",
            Self::Azula => "azula",
        }
    }
}

/// A posterior method of the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontierMethod {
    /// MMPS with the Tweedie covariance and `iterations` CG iterations (docs/method.md §5.1), with diem's
    /// default solver safeguards (curvature fallback, observation-space damping) unless `unguarded`.
    Mmps {
        /// CG iterations per denoiser call.
        iterations: usize,
        /// Without the safeguards: plain CG and the correction as solved, as azula computes it.
        unguarded: bool,
    },
    /// TDS with the Tweedie twist and `particles` particles per observation (docs/method.md §5.7), on DDPM.
    Tds {
        /// Particles K per observation.
        particles: usize,
    },
}

impl FrontierMethod {
    /// The report name: `mmps_cg1`, `mmps_cg3`, `tds_k4`, ...
    pub fn name(self) -> String {
        match self {
            Self::Mmps { iterations, unguarded: false } => format!("mmps_cg{iterations}"),
            Self::Mmps { iterations, unguarded: true } => format!("mmps_cg{iterations}_unguarded"),
            Self::Tds { particles } => format!("tds_k{particles}"),
        }
    }

    /// Parses [`FrontierMethod::name`].
    ///
    /// # Errors
    /// [`BenchError::Config`] (field `method`) for anything else.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            BenchError::config("method", format!("unknown method {name:?} (mmps_cgN[_unguarded] or tds_kN)"))
        };
        let number = |rest: &str| rest.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(bad);
        if let Some(rest) = name.strip_prefix("mmps_cg") {
            match rest.strip_suffix("_unguarded") {
                Some(n) => Ok(Self::Mmps { iterations: number(n)?, unguarded: true }),
                None => Ok(Self::Mmps { iterations: number(rest)?, unguarded: false }),
            }
        } else if let Some(rest) = name.strip_prefix("tds_k") {
            Ok(Self::Tds { particles: number(rest)? })
        } else {
            Err(bad())
        }
    }

    /// The method in diem's posterior vocabulary (MMPS with its default safeguards; TDS's default twist and
    /// resampling threshold).
    pub fn posterior(self) -> PosteriorMethod {
        match self {
            Self::Mmps { iterations, unguarded } => {
                let m = PosteriorMethod::Mmps(MmpsSpec::new(Covariance::Tweedie, SolverSpec::cg(iterations)));
                if unguarded {
                    m.without_safeguards()
                } else {
                    m
                }
            }
            Self::Tds { particles } => PosteriorMethod::Tds(TdsSpec { particles, ..TdsSpec::default() }),
        }
    }
}

/// One configuration of the frontier: who samples, on which sampler, with which method, in how many steps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunSpec {
    /// diem or azula.
    pub implementation: Implementation,
    /// The sampler's name (`ddim`, `ddpm`, `euler`, `heun`, `dpmpp2m`).
    pub sampler: String,
    /// The posterior method.
    pub method: FrontierMethod,
    /// Sampler steps T.
    pub steps: usize,
}

impl RunSpec {
    /// The curve this configuration belongs to (all step counts of one implementation, sampler and method):
    /// `"diem ddim mmps_cg1"`.
    pub fn curve(&self) -> String {
        format!("{} {} {}", self.implementation.name(), self.sampler, self.method.name())
    }

    /// A unique key: `"diem/ddim/mmps_cg1/64"`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.implementation.name(), self.sampler, self.method.name(), self.steps)
    }
}

/// Sizes and configurations of the frontier. [`Default`] is the full run (about 10 minutes on one core of the
/// 2-core development machine, both sides together); [`FrontierConfig::quick`] a first look in about a minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontierConfig {
    /// Dimensions d (one panel each).
    pub dims: Vec<i64>,
    /// Mixture components Kc.
    pub components: i64,
    /// Component standard deviation s.
    pub std: f64,
    /// Observation noise σ_y.
    pub sigma_y: f64,
    /// Seed of the problem (manifold, W, y) and of the exact sets.
    pub seed: u64,
    /// Posterior samples N per run (and per exact set).
    pub samples: i64,
    /// diem's samplers for MMPS ([`SamplerSpec::NAMES`]).
    pub samplers: Vec<String>,
    /// CG iterations of MMPS (diem and azula).
    pub cg_iterations: Vec<usize>,
    /// diem's MMPS step counts.
    pub steps: Vec<usize>,
    /// diem's samplers that also run MMPS without its safeguards (as azula computes it), at every CG
    /// iteration count and step count: isolates what the safeguards cost.
    #[serde(default)]
    pub unguarded_samplers: Vec<String>,
    /// TDS particle counts K.
    pub tds_particles: Vec<usize>,
    /// TDS step counts.
    pub tds_steps: Vec<usize>,
    /// azula's samplers (`ddim`, `ddpm`).
    pub azula_samplers: Vec<String>,
    /// azula's step counts.
    pub azula_steps: Vec<usize>,
    /// The step count of the reference, azula's DDIM with MMPS(1): the target is its divergence.
    pub reference_steps: usize,
    /// Repetitions of every run (interleaved diem, azula, azula, diem, ...); medians are reported.
    pub repeat: usize,
    /// Sinkhorn iteration cap.
    pub sinkhorn_max_iter: usize,
}

impl Default for FrontierConfig {
    /// d ∈ {8, 32}, N = 512, Kc = 256, s = σ_y = 0.05; diem's five samplers × MMPS(1, 3) at 4…256 steps (and
    /// DDIM without the safeguards), TDS K ∈ {2, 4, 8} at 8 and 16 steps; azula's DDIM and DDPM × MMPS(1, 3) at
    /// 8…256 steps; 3 repetitions.
    fn default() -> Self {
        Self {
            dims: vec![8, 32],
            components: 256,
            std: 0.05,
            sigma_y: 0.05,
            seed: 0,
            samples: 512,
            samplers: ["ddim", "ddpm", "euler", "heun", "dpmpp2m"].map(String::from).to_vec(),
            cg_iterations: vec![1, 3],
            steps: vec![4, 8, 16, 32, 64, 128, 256],
            unguarded_samplers: vec!["ddim".into()],
            tds_particles: vec![2, 4, 8],
            tds_steps: vec![8, 16],
            azula_samplers: ["ddim", "ddpm"].map(String::from).to_vec(),
            azula_steps: vec![8, 16, 32, 64, 128, 256],
            reference_steps: 256,
            repeat: 3,
            sinkhorn_max_iter: 1024,
        }
    }
}

impl FrontierConfig {
    /// A first look (about a minute): N = 128, 8 to 32 steps, TDS K = 2, reference at 32 steps.
    pub fn quick() -> Self {
        Self {
            samples: 128,
            steps: vec![8, 16, 32],
            tds_particles: vec![2],
            tds_steps: vec![8],
            azula_steps: vec![8, 16, 32],
            reference_steps: 32,
            ..Self::default()
        }
    }

    /// Checks the sizes and names.
    ///
    /// # Errors
    /// [`BenchError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.dims.is_empty() || self.dims.iter().any(|&d| d < 1) {
            return Err(BenchError::config(
                "dims",
                format!("must be ≥ 1 and not empty, got {:?}", self.dims),
            ));
        }
        if self.samples < 2 {
            return Err(BenchError::config("samples", format!("must be ≥ 2, got {}", self.samples)));
        }
        if self.repeat == 0 {
            return Err(BenchError::config("repeat", "must be ≥ 1"));
        }
        for name in self.samplers.iter().chain(&self.unguarded_samplers) {
            SamplerSpec::from_name(name, 1).map_err(|e| BenchError::config("samplers", e.to_string()))?;
        }
        if let Some(bad) = self.azula_samplers.iter().find(|s| !matches!(s.as_str(), "ddim" | "ddpm")) {
            return Err(BenchError::config("azula_samplers", format!("{bad:?}: expected ddim or ddpm")));
        }
        for (field, list) in [
            ("cg_iterations", &self.cg_iterations),
            ("steps", &self.steps),
            ("tds_particles", &self.tds_particles),
            ("tds_steps", &self.tds_steps),
            ("azula_steps", &self.azula_steps),
        ] {
            if list.contains(&0) {
                return Err(BenchError::config(field, "every entry must be ≥ 1"));
            }
        }
        if self.reference_steps == 0 {
            return Err(BenchError::config("reference_steps", "must be ≥ 1"));
        }
        self.problem(self.dims[0]).validate()
    }

    /// The mixture problem for dimension `d` (the sweep's: `p = d/2`, at least 1).
    pub fn problem(&self, d: i64) -> MixtureConfig {
        MixtureConfig {
            ambient_dim: d,
            components: self.components,
            std: self.std,
            obs_dim: (d / 2).max(1),
            sigma_y: self.sigma_y,
        }
    }

    /// diem's configurations: every sampler × CG iterations × step count, then TDS's particle counts × steps.
    pub fn diem_runs(&self) -> Vec<RunSpec> {
        let mut out = Vec::new();
        for sampler in &self.samplers {
            for &iterations in &self.cg_iterations {
                for &steps in &self.steps {
                    out.push(RunSpec {
                        implementation: Implementation::Diem,
                        sampler: sampler.clone(),
                        method: FrontierMethod::Mmps { iterations, unguarded: false },
                        steps,
                    });
                }
            }
        }
        for sampler in &self.unguarded_samplers {
            for &iterations in &self.cg_iterations {
                for &steps in &self.steps {
                    out.push(RunSpec {
                        implementation: Implementation::Diem,
                        sampler: sampler.clone(),
                        method: FrontierMethod::Mmps { iterations, unguarded: true },
                        steps,
                    });
                }
            }
        }
        for &particles in &self.tds_particles {
            for &steps in &self.tds_steps {
                out.push(RunSpec {
                    implementation: Implementation::Diem,
                    sampler: "ddpm".into(),
                    method: FrontierMethod::Tds { particles },
                    steps,
                });
            }
        }
        out
    }

    /// azula's configurations: every sampler × CG iterations × step count, with the reference (DDIM,
    /// MMPS(1), [`FrontierConfig::reference_steps`]) always included.
    pub fn azula_runs(&self) -> Vec<RunSpec> {
        let mut out = Vec::new();
        for sampler in &self.azula_samplers {
            for &iterations in &self.cg_iterations {
                for &steps in &self.azula_steps {
                    out.push(RunSpec {
                        implementation: Implementation::Azula,
                        sampler: sampler.clone(),
                        method: FrontierMethod::Mmps { iterations, unguarded: false },
                        steps,
                    });
                }
            }
        }
        let reference = self.reference();
        if !out.contains(&reference) {
            out.push(reference);
        }
        out
    }

    /// The reference configuration: azula's DDIM with MMPS(1) at [`FrontierConfig::reference_steps`].
    pub fn reference(&self) -> RunSpec {
        RunSpec {
            implementation: Implementation::Azula,
            sampler: "ddim".into(),
            method: FrontierMethod::Mmps { iterations: 1, unguarded: false },
            steps: self.reference_steps,
        }
    }

    fn sinkhorn(&self) -> Sinkhorn {
        Sinkhorn { max_iter: self.sinkhorn_max_iter, ..Sinkhorn::default() }
    }
}

/// The problem of one dimension with its two exact posterior sets and their divergence baseline.
#[derive(Debug)]
pub struct FrontierProblem {
    /// The mixture problem (float64, CPU).
    pub problem: MixtureProblem,
    /// The first exact posterior set `[N, d]` (every divergence is measured against it).
    pub u1: Tensor,
    /// The second exact posterior set `[N, d]`.
    pub u2: Tensor,
    /// `OT_λ(u1, u2)`.
    pub baseline: f64,
    sinkhorn: Sinkhorn,
}

impl FrontierProblem {
    /// Draws the problem of dimension `d` and two exact sets of N posterior samples (as [`crate::sweep`]).
    ///
    /// # Errors
    /// Problem, posterior-sampling and Sinkhorn errors.
    pub fn generate(config: &FrontierConfig, d: i64) -> Result<Self> {
        let problem = MixtureProblem::generate(&config.problem(d), config.seed)?;
        let posterior = problem.posterior();
        let mut rng = random::stream(config.seed, 9);
        let u1 = posterior.sample(&mut rng, config.samples, 0.0)?;
        let u2 = posterior.sample(&mut rng, config.samples, 0.0)?;
        Self::from_parts(config, problem, u1, u2)
    }

    fn from_parts(config: &FrontierConfig, problem: MixtureProblem, u1: Tensor, u2: Tensor) -> Result<Self> {
        let sinkhorn = config.sinkhorn();
        let baseline = sinkhorn.ot(&u1, &u2)?.cost;
        Ok(Self { problem, u1, u2, baseline, sinkhorn })
    }

    /// The dimension d.
    pub fn dim(&self) -> i64 {
        self.problem.config.ambient_dim
    }

    /// The Sinkhorn divergence of `samples` `[M, d]` to the exact posterior,
    /// `max(OT_λ(u1, v) − OT_λ(u1, u2), 1e-6)`; NaN when a sample is not finite (a diverged sampler). The one
    /// formula for diem's samples and for external ones.
    ///
    /// # Errors
    /// [`BenchError::Config`] for a set of the wrong width; Sinkhorn errors.
    pub fn divergence(&self, samples: &Tensor) -> Result<f64> {
        let size = samples.size();
        if size.len() != 2 || size[1] != self.dim() {
            return Err(BenchError::config(
                "samples",
                format!("expected [M, {}] posterior samples, got {size:?}", self.dim()),
            ));
        }
        let v = samples.to_kind(Kind::Double).to_device(Device::Cpu);
        if !bool::try_from(v.isfinite().all())? {
            return Ok(f64::NAN);
        }
        Ok((self.sinkhorn.ot(&self.u1, &v)?.cost - self.baseline).max(diem_metrics::DIVERGENCE_FLOOR))
    }

    /// The tensors of this problem, named `d{d}.{name}`: `centres` `[Kc, d]`, `w` `[p, d]`, `y` `[p]`, `u1`, `u2`
    /// `[N, d]`, and the scalars `std`, `sigma_y` (all float64).
    fn named(&self) -> Vec<(String, Tensor)> {
        let d = self.dim();
        let c = &self.problem.config;
        let scalar = |v: f64| Tensor::from_slice(&[v]);
        [
            ("centres", self.problem.centres.shallow_clone()),
            ("w", self.problem.w.shallow_clone()),
            ("y", self.problem.y.shallow_clone()),
            ("u1", self.u1.shallow_clone()),
            ("u2", self.u2.shallow_clone()),
            ("std", scalar(c.std)),
            ("sigma_y", scalar(c.sigma_y)),
        ]
        .into_iter()
        .map(|(k, v)| (format!("d{d}.{k}"), v.to_kind(Kind::Double).contiguous()))
        .collect()
    }

    /// Writes the problems to one safetensors file (tensors `d{d}.centres`, `.w`, `.y`, `.u1`, `.u2`, `.std`,
    /// `.sigma_y`, float64), the file `benches/python/azula_frontier.py` reads.
    ///
    /// # Errors
    /// libtorch write errors.
    pub fn export(problems: &[Self], path: &Path) -> Result<()> {
        let named: Vec<(String, Tensor)> = problems.iter().flat_map(Self::named).collect();
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Reads the problem of dimension `d` back from a file written by [`FrontierProblem::export`].
    ///
    /// # Errors
    /// Missing tensors or a problem that does not match `config` (naming the file); Sinkhorn errors.
    pub fn import(config: &FrontierConfig, path: &Path, d: i64) -> Result<Self> {
        let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let get = |k: &str| {
            tensors.get(&format!("d{d}.{k}")).map(Tensor::shallow_clone).ok_or_else(|| {
                BenchError::config(
                    format!("{}: tensor d{d}.{k}", path.display()),
                    "missing from the problem file",
                )
            })
        };
        let mixture = config.problem(d);
        let (centres, w, y) = (get("centres")?, get("w")?, get("y")?);
        let (kc, p) = (mixture.components, mixture.obs_dim);
        if centres.size() != [kc, d] || w.size() != [p, d] || y.size() != [p] {
            return Err(BenchError::config(
                path.display().to_string(),
                format!(
                    "d = {d}: shapes {:?}, {:?}, {:?} do not match the configuration",
                    centres.size(),
                    w.size(),
                    y.size()
                ),
            ));
        }
        let x_star = centres.get(0);
        let problem = MixtureProblem { config: mixture, centres, w, x_star, y };
        Self::from_parts(config, problem, get("u1")?, get("u2")?)
    }
}

/// One timed run and its divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierRecord {
    /// `diem` or `azula`.
    pub implementation: Implementation,
    /// The sampler's name.
    pub sampler: String,
    /// The method's name ([`FrontierMethod::name`]).
    pub method: String,
    /// Sampler steps T.
    pub steps: usize,
    /// Dimension d.
    pub dim: i64,
    /// Repetition (0-based); also the seed of the sampler's noise.
    pub rep: usize,
    /// Wall-clock seconds of the sampling call.
    pub seconds: f64,
    /// CPU seconds (user + system) of the sampling call, when known.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Forward passes of the prior network.
    pub forwards: usize,
    /// Vector-Jacobian products through the prior network.
    pub vjps: usize,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// Sinkhorn divergence to the exact posterior (NaN when the samples were not finite; `null` in an
    /// external record until [`report`] computes it).
    #[serde(default)]
    pub divergence: Option<f64>,
    /// An external run's samples: the safetensors file (relative to the run folder) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_file: Option<String>,
    /// ... and the tensor's name in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_key: Option<String>,
}

impl FrontierRecord {
    /// The configuration of this record.
    ///
    /// # Errors
    /// An unknown method name.
    pub fn spec(&self) -> Result<RunSpec> {
        Ok(RunSpec {
            implementation: self.implementation,
            sampler: self.sampler.clone(),
            method: FrontierMethod::parse(&self.method)?,
            steps: self.steps,
        })
    }

    /// Network evaluations: forwards + VJPs.
    pub fn evaluations(&self) -> usize {
        self.forwards + self.vjps
    }
}

/// Draws N posterior samples with one of diem's configurations on the problem (float64, CPU) and times the
/// sampling call (posterior construction included, divergence excluded).
///
/// # Errors
/// [`BenchError::Config`] for an azula configuration or an unknown sampler; sampler and guidance errors.
pub fn sample_diem(problem: &FrontierProblem, spec: &RunSpec, seed: u64) -> Result<(Tensor, FrontierRecord)> {
    if spec.implementation != Implementation::Diem {
        return Err(BenchError::config("implementation", format!("{} is not diem's", spec.key())));
    }
    let p = &problem.problem;
    let prior = p.denoiser()?;
    let d = problem.dim();
    let n = problem.u1.size()[0];
    let op = Projection::new(p.w.unsqueeze(0), &[d])?;
    let y = p.y.unsqueeze(0).expand([n, p.config.obs_dim], false).contiguous();
    let noise = NoiseCov::isotropic(p.config.sigma_y)?;
    let schedule = VeSchedule::manifold();
    let sampler: Box<dyn Sampler> = match spec.method {
        FrontierMethod::Tds { .. } => Box::new(Ddpm::new(schedule, TimeGrid::uniform(spec.steps)?)),
        FrontierMethod::Mmps { .. } => SamplerSpec::from_name(&spec.sampler, spec.steps)?.build(schedule)?,
    };
    let method = spec.method.posterior();
    let mut rng = NoiseRng::seeded(seed);
    let measurement = Measurement::new(&op, &y, noise)?;
    let cpu_start = crate::posterior_bench::process_cpu_seconds();
    let start = Instant::now();
    let (x, stats) =
        method.sample(&prior, measurement, None, sampler.as_ref(), (Kind::Double, Device::Cpu), &mut rng)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = crate::posterior_bench::process_cpu_seconds().zip(cpu_start).map(|(b, a)| b - a);
    let record = FrontierRecord {
        implementation: Implementation::Diem,
        sampler: spec.sampler.clone(),
        method: spec.method.name(),
        steps: spec.steps,
        dim: d,
        rep: 0,
        seconds,
        cpu_seconds,
        forwards: stats.forwards,
        vjps: stats.vjps,
        threads: tch::get_num_threads(),
        divergence: None,
        samples_file: None,
        samples_key: None,
    };
    Ok((x, record))
}

/// Runs every diem configuration of `config` once on `problem` (repetition `rep`, the noise seed), after a
/// short untimed warm-up, and computes each divergence. `progress` sees every record.
///
/// # Errors
/// As [`sample_diem`] and [`FrontierProblem::divergence`].
pub fn run_diem(
    config: &FrontierConfig,
    problem: &FrontierProblem,
    rep: usize,
    progress: &mut dyn FnMut(&FrontierRecord),
) -> Result<Vec<FrontierRecord>> {
    let runs = config.diem_runs();
    if let Some(first) = runs.first() {
        let _warm_up = sample_diem(problem, &RunSpec { steps: 2, ..first.clone() }, u64::MAX)?;
    }
    let mut out = Vec::with_capacity(runs.len());
    for spec in &runs {
        let (x, mut record) = sample_diem(problem, spec, rep as u64)?;
        record.rep = rep;
        record.divergence = Some(problem.divergence(&x)?);
        progress(&record);
        out.push(record);
    }
    Ok(out)
}

/// Medians over the repetitions of one configuration and dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierPoint {
    /// `diem` or `azula`.
    pub implementation: Implementation,
    /// The sampler's name.
    pub sampler: String,
    /// The method's name.
    pub method: String,
    /// Sampler steps.
    pub steps: usize,
    /// Dimension d.
    pub dim: i64,
    /// Repetitions with a finite divergence (of `runs`).
    pub finite: usize,
    /// Repetitions.
    pub runs: usize,
    /// Median wall seconds, and the smallest and largest.
    pub seconds: f64,
    /// Smallest wall seconds.
    pub seconds_min: f64,
    /// Largest wall seconds.
    pub seconds_max: f64,
    /// Median network evaluations (forwards + VJPs).
    pub evaluations: f64,
    /// Median divergence over the finite repetitions (NaN when none), and the smallest and largest.
    pub divergence: f64,
    /// Median absolute deviation of the finite repetitions' divergences from their median.
    pub divergence_mad: f64,
    /// Smallest divergence.
    pub divergence_min: f64,
    /// Largest divergence.
    pub divergence_max: f64,
}

impl FrontierPoint {
    /// The curve this point belongs to.
    pub fn curve(&self) -> String {
        format!("{} {} {}", self.implementation.name(), self.sampler, self.method)
    }
}

/// Groups `records` by configuration and dimension and takes medians (repetitions whose divergence is NaN or
/// missing count in `runs` but not in the divergence's median; wall times count all).
pub fn summarize(records: &[FrontierRecord]) -> Vec<FrontierPoint> {
    type Key = (i64, Implementation, String, String, usize);
    let mut groups: BTreeMap<Key, Vec<&FrontierRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.dim, r.implementation, r.sampler.clone(), r.method.clone(), r.steps))
            .or_default()
            .push(r);
    }
    let lo = |v: &[f64]| v.iter().copied().filter(|x| !x.is_nan()).fold(f64::NAN, f64::min);
    let hi = |v: &[f64]| v.iter().copied().filter(|x| !x.is_nan()).fold(f64::NAN, f64::max);
    groups
        .into_iter()
        .map(|((dim, implementation, sampler, method, steps), rs)| {
            let secs: Vec<f64> = rs.iter().map(|r| r.seconds).collect();
            let divs: Vec<f64> = rs.iter().map(|r| r.divergence.unwrap_or(f64::NAN)).collect();
            let median = quantile(&divs, 0.5);
            let deviations: Vec<f64> = divs.iter().map(|v| (v - median).abs()).collect();
            let evals: Vec<f64> = rs.iter().map(|r| r.evaluations() as f64).collect();
            FrontierPoint {
                implementation,
                sampler,
                method,
                steps,
                dim,
                finite: divs.iter().filter(|v| v.is_finite()).count(),
                runs: rs.len(),
                seconds: quantile(&secs, 0.5),
                seconds_min: lo(&secs),
                seconds_max: hi(&secs),
                evaluations: quantile(&evals, 0.5),
                divergence: median,
                divergence_mad: quantile(&deviations, 0.5),
                divergence_min: lo(&divs),
                divergence_max: hi(&divs),
            }
        })
        .collect()
}

/// The check of issue 14 for one dimension: "diem reaches azula's DDIM-256 MMPS(1) accuracy in ≤ 1/3 of
/// azula's wall time".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// Dimension d.
    pub dim: i64,
    /// The reference (azula DDIM MMPS(1) at the reference steps): median divergence, its largest repetition,
    /// and its median wall seconds; `None` when it did not run.
    pub reference: Option<FrontierPoint>,
    /// The accuracy to reach: the reference's median divergence plus its run-to-run spread, measured as the
    /// median absolute deviation of its repetitions (robust to the single repetition in which a few outlying
    /// samples dominate the transport cost); `None` without a reference.
    pub bound: Option<f64>,
    /// The fastest diem configuration whose median divergence is at most [`TargetCheck::bound`].
    pub fastest: Option<FrontierPoint>,
    /// The fastest diem configuration whose median divergence is at most the reference's median (strict).
    pub fastest_strict: Option<FrontierPoint>,
    /// `fastest.seconds / reference.seconds`.
    pub ratio: Option<f64>,
    /// `fastest_strict.seconds / reference.seconds`.
    pub ratio_strict: Option<f64>,
    /// Like for like: the fastest qualifying diem configuration with the reference's sampler and method
    /// (DDIM, MMPS(1) with its safeguards).
    pub like_for_like: Option<FrontierPoint>,
    /// `like_for_like.seconds / reference.seconds`.
    pub ratio_like_for_like: Option<f64>,
    /// Whether `ratio ≤ 1/3`.
    pub met: bool,
}

/// [`TargetCheck`] for every dimension of `points`.
pub fn target_checks(config: &FrontierConfig, points: &[FrontierPoint]) -> Vec<TargetCheck> {
    let reference = config.reference();
    config
        .dims
        .iter()
        .map(|&dim| {
            let at_d: Vec<&FrontierPoint> = points.iter().filter(|p| p.dim == dim).collect();
            let r = at_d
                .iter()
                .find(|p| {
                    p.implementation == Implementation::Azula
                        && p.sampler == reference.sampler
                        && p.method == reference.method.name()
                        && p.steps == reference.steps
                })
                .map(|p| (*p).clone());
            let fastest_below = |bound: f64, same: bool| {
                at_d.iter()
                    .filter(|p| p.implementation == Implementation::Diem && p.divergence <= bound)
                    .filter(|p| {
                        !same || (p.sampler == reference.sampler && p.method == reference.method.name())
                    })
                    .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
                    .map(|p| (*p).clone())
            };
            let bound = r.as_ref().map(|r| r.divergence + r.divergence_mad);
            let (fastest, fastest_strict, like_for_like) = match (&r, bound) {
                (Some(r), Some(bound)) => (
                    fastest_below(bound, false),
                    fastest_below(r.divergence, false),
                    fastest_below(bound, true),
                ),
                _ => (None, None, None),
            };
            let ratio_of =
                |f: &Option<FrontierPoint>| f.as_ref().zip(r.as_ref()).map(|(f, r)| f.seconds / r.seconds);
            let (ratio, ratio_strict) = (ratio_of(&fastest), ratio_of(&fastest_strict));
            let ratio_like_for_like = ratio_of(&like_for_like);
            TargetCheck {
                dim,
                met: ratio.is_some_and(|x| x <= 1.0 / 3.0),
                reference: r,
                bound,
                fastest,
                fastest_strict,
                ratio,
                ratio_strict,
                like_for_like,
                ratio_like_for_like,
            }
        })
        .collect()
}

/// The markdown report: one table per dimension (every configuration, fastest first within a curve) and the
/// target check.
pub fn markdown(config: &FrontierConfig, points: &[FrontierPoint], checks: &[TargetCheck]) -> String {
    let mut md = format!(
        "Mixture posterior (Kc = {}, s = {}, σ_y = {}, p = d/2), N = {} samples per run, float64, CPU; {} \
         repetitions per configuration, interleaved between diem and azula; medians (min–max over the \
         repetitions). Divergence: Sinkhorn divergence to the exact posterior (floor 1e-6). Evaluations: network \
         forwards + VJPs per sample batch.\n",
        config.components, config.std, config.sigma_y, config.samples, config.repeat
    );
    for &dim in &config.dims {
        md.push_str(&format!(
            "\n### d = {dim}\n\n| implementation | sampler | method | steps | evaluations | wall s (min–max) | divergence (min–max) |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: |\n"
        ));
        for p in points.iter().filter(|p| p.dim == dim) {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.3} ({:.3}–{:.3}) | {:.2e} ({:.2e}–{:.2e}){} |\n",
                p.implementation.name(),
                p.sampler,
                p.method,
                p.steps,
                p.evaluations,
                p.seconds,
                p.seconds_min,
                p.seconds_max,
                p.divergence,
                p.divergence_min,
                p.divergence_max,
                if p.finite < p.runs {
                    format!(", {} of {} runs diverged", p.runs - p.finite, p.runs)
                } else {
                    String::new()
                }
            ));
        }
    }
    let reference = config.reference();
    md.push_str(&format!(
        "\n### Target: diem reaches azula's DDIM-{} MMPS(1) accuracy in ≤ 1/3 of azula's wall time\n\n\
         A diem configuration qualifies when its median divergence is at most the reference's median plus the \
         median absolute deviation of its repetitions (its accuracy within its run-to-run spread: the bound); \
         \"strict\" asks for at most its median; \"same method\" asks for diem's DDIM with MMPS(1) (its safeguards \
         on). Ratio = diem's median wall time / azula's.\n\n\
         | d | azula DDIM-{} MMPS(1): divergence (min–max), bound, wall s | fastest qualifying diem | wall s | ratio | strict: fastest | ratio | same method: fastest | ratio | met |\n\
         | ---: | --- | --- | ---: | ---: | --- | ---: | --- | ---: | --- |\n",
        reference.steps, reference.steps
    ));
    let name = |p: &Option<FrontierPoint>| {
        p.as_ref().map_or_else(|| "none".to_string(), |p| format!("{} {} T={}", p.sampler, p.method, p.steps))
    };
    let num =
        |v: Option<f64>, digits: usize| v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.digits$}"));
    for c in checks {
        let r = c.reference.as_ref();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.dim,
            r.map_or_else(
                || "not run".to_string(),
                |r| format!(
                    "{:.2e} ({:.2e}–{:.2e}), {:.2e}, {:.3}",
                    r.divergence,
                    r.divergence_min,
                    r.divergence_max,
                    r.divergence + r.divergence_mad,
                    r.seconds
                )
            ),
            name(&c.fastest),
            num(c.fastest.as_ref().map(|p| p.seconds), 3),
            num(c.ratio, 3),
            name(&c.fastest_strict),
            num(c.ratio_strict, 3),
            name(&c.like_for_like),
            num(c.ratio_like_for_like, 3),
            if c.met { "yes" } else { "no" },
        ));
    }
    md
}

/// Files written by [`report`].
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// Every run with its divergence, CSV.
    pub csv: PathBuf,
    /// Every run with its divergence, JSON lines.
    pub jsonl: PathBuf,
    /// Medians per configuration, CSV.
    pub summary: PathBuf,
    /// The figure: one log–log panel per dimension.
    pub png: PathBuf,
    /// The markdown table and target check.
    pub markdown: PathBuf,
    /// The target checks, JSON.
    pub checks: PathBuf,
}

/// Reads JSON lines of [`FrontierRecord`] (a missing file is empty).
///
/// # Errors
/// IO and parse errors, naming the file.
pub fn read_records(path: &Path) -> Result<Vec<FrontierRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BenchError::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| BenchError::Json { path: path.to_path_buf(), source })
        })
        .collect()
}

/// Appends records as JSON lines.
///
/// # Errors
/// IO errors, naming the file.
pub fn append_records(path: &Path, records: &[FrontierRecord]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| BenchError::io(path, e))?;
    for r in records {
        let line = serde_json::to_string(r)
            .map_err(|source| BenchError::Json { path: path.to_path_buf(), source })?;
        writeln!(f, "{line}").map_err(|e| BenchError::io(path, e))?;
    }
    Ok(())
}

/// What [`report`] computed and wrote.
#[derive(Debug)]
pub struct Report {
    /// Every run, diem's and the external ones, with its divergence.
    pub records: Vec<FrontierRecord>,
    /// Medians per configuration and dimension.
    pub points: Vec<FrontierPoint>,
    /// The target check per dimension.
    pub checks: Vec<TargetCheck>,
    /// The files written.
    pub files: ReportFiles,
}

/// The report of a run folder `dir` (holding `config.json`, `problem.safetensors`, `diem.jsonl` and, when
/// azula ran, `azula.jsonl` with its sample files): computes the divergence of every external sample set with
/// [`FrontierProblem::divergence`], then writes `frontier.csv`, `frontier.jsonl`, `frontier-summary.csv`,
/// `frontier.png`, `frontier.md` and `frontier-target.json`.
///
/// # Errors
/// IO, parse, Sinkhorn and drawing errors; an external record without its samples.
pub fn report(dir: &Path) -> Result<Report> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| BenchError::io(&config_path, e))?;
    let config: FrontierConfig = serde_json::from_str(&text)
        .map_err(|source| BenchError::Json { path: config_path.clone(), source })?;
    let problem_path = dir.join("problem.safetensors");
    let problems: BTreeMap<i64, FrontierProblem> = config
        .dims
        .iter()
        .map(|&d| Ok((d, FrontierProblem::import(&config, &problem_path, d)?)))
        .collect::<Result<_>>()?;
    let mut records = read_records(&dir.join("diem.jsonl"))?;
    let mut sample_files: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
    for mut r in read_records(&dir.join("azula.jsonl"))? {
        if r.divergence.is_none() {
            let (Some(file), Some(key)) = (r.samples_file.clone(), r.samples_key.clone()) else {
                return Err(BenchError::config(
                    "azula.jsonl",
                    format!("{} d = {}: no samples", r.method, r.dim),
                ));
            };
            if !sample_files.contains_key(&file) {
                let tensors = Tensor::read_safetensors(dir.join(&file))?.into_iter().collect();
                sample_files.insert(file.clone(), tensors);
            }
            let x = sample_files.get(&file).and_then(|t| t.get(&key)).ok_or_else(|| {
                BenchError::config(format!("{file}: tensor {key}"), "missing from the sample file")
            })?;
            let problem = problems.get(&r.dim).ok_or_else(|| {
                BenchError::config("azula.jsonl", format!("d = {} is not in the problem", r.dim))
            })?;
            r.divergence = Some(problem.divergence(x)?);
        }
        records.push(r);
    }
    let points = summarize(&records);
    let checks = target_checks(&config, &points);
    let files = ReportFiles {
        csv: dir.join("frontier.csv"),
        jsonl: dir.join("frontier.jsonl"),
        summary: dir.join("frontier-summary.csv"),
        png: dir.join("frontier.png"),
        markdown: dir.join("frontier.md"),
        checks: dir.join("frontier-target.json"),
    };
    let opt = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x:e}"));
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.dim.to_string(),
                r.implementation.name().into(),
                r.sampler.clone(),
                r.method.clone(),
                r.steps.to_string(),
                r.rep.to_string(),
                format!("{:e}", r.seconds),
                opt(r.cpu_seconds),
                r.forwards.to_string(),
                r.vjps.to_string(),
                r.threads.to_string(),
                opt(r.divergence),
            ]
        })
        .collect();
    let header = [
        "dim",
        "implementation",
        "sampler",
        "method",
        "steps",
        "rep",
        "seconds",
        "cpu_seconds",
        "forwards",
        "vjps",
        "threads",
        "divergence",
    ];
    write_csv(&files.csv, &header, &rows)?;
    let mut jsonl = String::new();
    for r in &records {
        let mut r = r.clone();
        (r.samples_file, r.samples_key) = (None, None);
        jsonl.push_str(
            &serde_json::to_string(&r)
                .map_err(|source| BenchError::Json { path: files.jsonl.clone(), source })?,
        );
        jsonl.push('\n');
    }
    write_atomic(&files.jsonl, jsonl.as_bytes())?;
    let summary_rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                p.dim.to_string(),
                p.implementation.name().into(),
                p.sampler.clone(),
                p.method.clone(),
                p.steps.to_string(),
                format!("{}", p.evaluations),
                format!("{:e}", p.seconds),
                format!("{:e}", p.seconds_min),
                format!("{:e}", p.seconds_max),
                format!("{:e}", p.divergence),
                format!("{:e}", p.divergence_min),
                format!("{:e}", p.divergence_max),
                format!("{:e}", p.divergence_mad),
                format!("{}/{}", p.finite, p.runs),
            ]
        })
        .collect();
    let header = [
        "dim",
        "implementation",
        "sampler",
        "method",
        "steps",
        "evaluations",
        "seconds",
        "seconds_min",
        "seconds_max",
        "divergence",
        "divergence_min",
        "divergence_max",
        "divergence_mad",
        "finite_runs",
    ];
    write_csv(&files.summary, &header, &summary_rows)?;
    let checks_json = serde_json::to_string_pretty(&checks)
        .map_err(|source| BenchError::Json { path: files.checks.clone(), source })?;
    write_atomic(&files.checks, checks_json.as_bytes())?;
    write_figure(&config, &points, &files.png)?;
    write_atomic(&files.markdown, markdown(&config, &points, &checks).as_bytes())?;
    Ok(Report { records, points, checks, files })
}

/// Draws the frontier: one row of log–log panels per dimension (divergence against median wall seconds, one
/// curve per implementation, sampler and method, points in step order), the left panel with MMPS(1) and TDS,
/// the right one with MMPS(3), so that each panel's curves get distinct colours. Euler is left out of the
/// figure (not the tables): with the VE schedule its step is DDIM's (docs/method.md §4.5) and its curve lies
/// on DDIM's.
///
/// # Errors
/// Drawing and image errors, naming the file.
pub fn write_figure(config: &FrontierConfig, points: &[FrontierPoint], path: &Path) -> Result<()> {
    use diem_plot::{line_plot, LinePlot, Series};
    type Select = fn(&FrontierPoint) -> bool;
    let columns: [(&str, Select); 2] = [
        ("MMPS(1) and TDS", |p| p.method.starts_with("mmps_cg1") || p.method.starts_with("tds")),
        ("MMPS(3)", |p| p.method.starts_with("mmps_cg3")),
    ];
    let mut rows = Vec::new();
    for &dim in &config.dims {
        let mut row = Vec::new();
        for (c, (label, select)) in columns.iter().enumerate() {
            let mut curves: BTreeMap<String, Vec<&FrontierPoint>> = BTreeMap::new();
            for p in points.iter().filter(|p| {
                p.dim == dim
                    && p.divergence.is_finite()
                    && p.seconds > 0.0
                    && p.sampler != "euler"
                    && select(p)
            }) {
                curves.entry(p.curve()).or_default().push(p);
            }
            let series = curves
                .into_iter()
                .map(|(name, mut ps)| {
                    ps.sort_by_key(|p| p.steps);
                    Series::new(
                        name,
                        ps.iter().map(|p| p.seconds).collect(),
                        ps.iter().map(|p| p.divergence).collect(),
                    )
                })
                .collect();
            let plot = LinePlot {
                title: format!("d = {dim}, {label}: divergence vs wall time (N = {})", config.samples),
                x_label: "wall seconds (median)".into(),
                y_label: "Sinkhorn divergence (median)".into(),
                log_x: true,
                log_y: true,
                series,
                size: (900, 650),
            };
            let panel = path.with_extension(format!("d{dim}-{c}.png"));
            line_plot(&plot, &panel).map_err(|e| match BenchError::from(e) {
                BenchError::Plot { message, .. } => BenchError::Plot { path: panel.clone(), message },
                other => other,
            })?;
            let img = image::open(&panel)
                .map(|i| i.to_rgba8())
                .map_err(|e| BenchError::Image { path: panel.clone(), message: e.to_string() })?;
            let _ = std::fs::remove_file(&panel);
            row.push(img);
        }
        rows.push(row);
    }
    let width = rows.iter().map(|r| r.iter().map(image::RgbaImage::width).sum::<u32>()).max().unwrap_or(1);
    let height: u32 = rows.iter().map(|r| r.iter().map(image::RgbaImage::height).max().unwrap_or(0)).sum();
    let mut canvas =
        image::RgbaImage::from_pixel(width.max(1), height.max(1), image::Rgba([255, 255, 255, 255]));
    let mut y = 0;
    for row in &rows {
        let mut x = 0;
        for img in row {
            image::imageops::overlay(&mut canvas, img, i64::from(x), i64::from(y));
            x += img.width();
        }
        y += row.iter().map(image::RgbaImage::height).max().unwrap_or(0);
    }
    let tmp = path.with_extension("png.tmp");
    canvas
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| BenchError::Image { path: path.to_path_buf(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(|e| BenchError::io(path, e))?;
    Ok(())
}
