//! `diem sample` and `diem posterior`: draw from a trained prior or its posteriors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diem_em::{write_npy, Covariance, PosteriorSpec, SafeguardSpec, SamplerSpec, SolverMethod, SolverSpec};
use diem_linalg::Dplr;
use diem_models::{checkpoint, Denoiser, PriorModel};
use diem_operators::Observation;
use diem_sampling::{
    DiffPir, DiffPirConfig, Dps, Mmps, NoiseRng, Pgdm, PgdmConfig, Sampler, TimeGrid, Tmpd, TmpdConfig,
};
use tch::{Device, Kind, Tensor};

use crate::checks::{check_memory, finite_result, output_path, say, warn, Watch};

/// Loads the prior named by `path` (a checkpoint directory or a run directory: its last lap).
pub fn load_prior(path: &Path, device: Device) -> Result<(PathBuf, PriorModel)> {
    let dir = diem_em::resolve_checkpoint(path).with_context(|| format!("--prior {}", path.display()))?;
    let (model, _ema) =
        checkpoint::load(&dir, device).with_context(|| format!("loading the prior in {}", dir.display()))?;
    Ok((dir, model))
}

/// The sampler named on the command line.
pub fn sampler_spec(name: &str, steps: usize) -> Result<SamplerSpec> {
    if steps > diem_em::config::MAX_STEPS {
        bail!("--steps must be at most {}, got {steps}", diem_em::config::MAX_STEPS);
    }
    Ok(match name {
        "ddpm" => SamplerSpec::Ddpm { steps },
        "ddim" => SamplerSpec::Ddim { steps },
        "pc" => SamplerSpec::Pc { steps, corrections: 1, tau: 0.1 },
        other => bail!("--sampler: unknown sampler {other:?} (expected ddpm, ddim or pc)"),
    })
}

/// The per-sample latent shape of a model: its prior mean's shape.
fn latent_shape(model: &PriorModel, dir: &Path) -> Result<Vec<i64>> {
    match model.mean() {
        Some(m) => Ok(m.size()),
        None => {
            bail!("{}: the checkpoint carries no prior mean, so its sample shape is unknown", dir.display())
        }
    }
}

/// Options of `diem sample`.
pub struct SampleArgs<'a> {
    /// The prior path.
    pub prior: &'a Path,
    /// Number of samples.
    pub n: i64,
    /// The output `.npy`.
    pub out: &'a Path,
    /// The sampler name.
    pub sampler: &'a str,
    /// Sampler steps.
    pub steps: usize,
    /// Noise seed (chunk `c` uses `seed + c`).
    pub seed: u64,
    /// Samples drawn at once.
    pub chunk: i64,
    /// The device.
    pub device: Device,
}

/// `diem sample`: `n` prior samples, `chunk` at a time (chunk `c` seeded `seed + c`, so up to `chunk`
/// samples are one draw), after checking the output path and the memory the job needs; nothing is written
/// unless every sample is finite.
pub fn sample(a: &SampleArgs<'_>) -> Result<()> {
    let n = a.n;
    if n < 1 {
        bail!("-n must be ≥ 1, got {n}");
    }
    if a.chunk < 1 {
        bail!("--chunk must be ≥ 1, got {}", a.chunk);
    }
    let spec = sampler_spec(a.sampler, a.steps)?;
    let run_dir = diem_em::resolve_checkpoint(a.prior).ok();
    let prior_dirs: Vec<(&str, &Path)> =
        [Some(("the prior", a.prior)), run_dir.as_deref().map(|d| ("the prior's checkpoint", d))]
            .into_iter()
            .flatten()
            .collect();
    output_path(a.out, "npy", &[], &prior_dirs)?;
    let (dir, model) = load_prior(a.prior, a.device)?;
    let latent = latent_shape(&model, &dir)?;
    let per_row = diem_operators::operator::checked_numel(&latent).unwrap_or(i64::MAX);
    check_memory(&format!("-n {n}"), n, per_row, a.chunk)?;
    let s = spec.build(model.schedule())?;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = a.chunk.min(n - start);
        let mut shape = vec![len];
        shape.extend(&latent);
        let watch = Watch::new(model.denoiser());
        let mut rng = NoiseRng::seeded(a.seed.wrapping_add((start / a.chunk) as u64));
        let x = s.sample(&watch, &shape, Kind::Float, a.device, &mut rng)?;
        let what = format!("{} sampling from {}", a.sampler, dir.display());
        let first = watch.first_non_finite().map(|f| (f, s.calls_per_step(), a.steps));
        finite_result(&what, &x, start, first, "")?;
        parts.push(x.to_device(Device::Cpu));
        start += len;
    }
    let x = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0) };
    write_npy(a.out, &x).with_context(|| format!("writing {}", a.out.display()))?;
    say(format!("wrote {} samples of shape {:?} to {}", n, latent, a.out.display()))
}

/// Options of `diem posterior`.
pub struct PosteriorArgs<'a> {
    /// The prior path.
    pub prior: &'a Path,
    /// The observations file.
    pub observations: &'a Path,
    /// The method.
    pub method: &'a str,
    /// The output `.npy`.
    pub out: &'a Path,
    /// The sampler name.
    pub sampler: &'a str,
    /// Sampler steps.
    pub steps: usize,
    /// Krylov method.
    pub solver: &'a str,
    /// Krylov iterations.
    pub iterations: usize,
    /// DPS step size.
    pub zeta: f64,
    /// MMPS without its safeguards.
    pub unguarded: bool,
    /// Observations per chunk.
    pub chunk: i64,
    /// Noise seed.
    pub seed: u64,
    /// The device.
    pub device: Device,
}

/// The posterior methods `diem posterior --method` accepts.
pub const METHODS: &[&str] =
    &["mmps", "mmps-cov-x", "mmps-cov-t", "mmps-ones", "mmps-zeros", "pgdm", "tmpd", "diffpir", "dps"];

/// `diem posterior`: one posterior sample per observation, chunked, chunk `c` seeded `seed + c`.
pub fn posterior(a: &PosteriorArgs<'_>) -> Result<()> {
    if !METHODS.contains(&a.method) {
        bail!("--method: unknown method {:?} (expected one of {})", a.method, METHODS.join(", "));
    }
    if a.chunk < 1 {
        bail!("--chunk must be ≥ 1, got {}", a.chunk);
    }
    let run_dir = diem_em::resolve_checkpoint(a.prior).ok();
    let prior_dirs: Vec<(&str, &Path)> =
        [Some(("the prior", a.prior)), run_dir.as_deref().map(|d| ("the prior's checkpoint", d))]
            .into_iter()
            .flatten()
            .collect();
    output_path(a.out, "npy", &[("the observations", a.observations)], &prior_dirs)?;
    let (dir, model) = load_prior(a.prior, a.device)?;
    let obs = Observation::load(a.observations, a.device)
        .with_context(|| format!("reading observations {}", a.observations.display()))?;
    let latent = latent_shape(&model, &dir)?;
    if obs.operator.x_shape() != latent {
        bail!(
            "{}: the observations' latents have shape {:?} (their x_shape), but the prior in {} draws \
             samples of shape {latent:?}",
            a.observations.display(),
            obs.operator.x_shape(),
            dir.display()
        );
    }
    let unobserved = obs.unobserved();
    if !unobserved.is_empty() {
        warn(format!(
            "warning: {} of {} observations carry no information (zero operator, e.g. an all-zero mask): \
             their posterior samples are prior samples",
            unobserved.len(),
            obs.len()
        ));
    }
    check_memory(&format!("{} posterior samples", obs.len()), obs.len(), obs.operator.x_numel(), a.chunk)?;
    let solver_method = match a.solver {
        "cg" => SolverMethod::Cg,
        "gmres" => SolverMethod::Gmres,
        "bicgstab" => SolverMethod::Bicgstab,
        other => bail!("--solver: unknown solver {other:?} (expected cg, gmres or bicgstab)"),
    };
    if a.iterations > diem_em::config::MAX_ITERATIONS {
        bail!("--iterations must be at most {}, got {}", diem_em::config::MAX_ITERATIONS, a.iterations);
    }
    let solver = SolverSpec { method: solver_method, iterations: a.iterations, rtol: None, coupled: false };
    let covariance = match a.method {
        "mmps-cov-x" => Some(Covariance::CovX),
        "mmps-cov-t" => Some(Covariance::CovT),
        "mmps-ones" => Some(Covariance::Ones),
        "mmps-zeros" => Some(Covariance::Zeros),
        "mmps" => Some(Covariance::Tweedie),
        _ => None,
    };
    let sigma_x = if covariance == Some(Covariance::CovX) {
        let path = dir.join(diem_em::layout::GAUSSIAN_FILE);
        let g = diem_em::GaussianPrior::load(&path, a.device)
            .with_context(|| format!("mmps-cov-x needs the run's Gaussian prior {}", path.display()))?;
        Some(g.cov.to_kind(Kind::Float))
    } else {
        None
    };
    let spec = sampler_spec(a.sampler, a.steps)?;
    let sampler = spec.build(model.schedule())?;
    let prior: &dyn Denoiser = model.denoiser();
    let n = obs.len();
    let chunk = a.chunk;
    let hint = if a.method == "mmps-zeros" && a.unguarded {
        "; mmps-zeros takes the posterior covariance V to be 0, which over-corrects by about \
         (prior variance) / σ_y² per step when the noise is small: drop --unguarded, or use mmps, mmps-cov-x \
         or mmps-ones"
    } else {
        ""
    };
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let sub = obs.narrow(start, len);
        let mut shape = vec![len];
        shape.extend(sub.operator.x_shape());
        let mut rng = NoiseRng::seeded(a.seed.wrapping_add((start / chunk) as u64));
        // Every method's denoiser is watched, so a non-finite result names the step where it appeared.
        let (x, watch_calls): (Tensor, _) = match (a.method, covariance) {
            (_, Some(cov)) => {
                let identity = identity_cov(&sub);
                let mut spec = PosteriorSpec::new(cov, solver);
                if a.unguarded {
                    spec.safeguards = SafeguardSpec::none();
                }
                let cfg = spec.to_mmps(sigma_x.as_ref().unwrap_or(&identity));
                let d = Mmps::from_observation(prior, &sub, cfg)?;
                let w = Watch::new(&d);
                let x = sampler.sample(&w, &shape, Kind::Float, a.device, &mut rng)?;
                (x, w.first_non_finite())
            }
            ("pgdm", None) => {
                let d = Pgdm::from_observation(prior, &sub, PgdmConfig { solver: solver.to_solver() })?;
                let w = Watch::new(&d);
                let x = sampler.sample(&w, &shape, Kind::Float, a.device, &mut rng)?;
                (x, w.first_non_finite())
            }
            ("tmpd", None) => {
                let d = Tmpd::from_observation(prior, &sub, TmpdConfig { solver: solver.to_solver() })?;
                let w = Watch::new(&d);
                let x = sampler.sample(&w, &shape, Kind::Float, a.device, &mut rng)?;
                (x, w.first_non_finite())
            }
            ("diffpir", None) => {
                let cfg = DiffPirConfig { solver: solver.to_solver(), ..DiffPirConfig::default() };
                let d = DiffPir::from_observation(prior, &sub, cfg)?;
                let w = Watch::new(&d);
                let x = sampler.sample(&w, &shape, Kind::Float, a.device, &mut rng)?;
                (x, w.first_non_finite())
            }
            _ => {
                let dps = Dps::from_observation(model.schedule(), TimeGrid::uniform(a.steps)?, &sub, a.zeta)?;
                let w = Watch::new(prior);
                let x = dps.sample(&w, &shape, Kind::Float, a.device, &mut rng)?;
                (x, w.first_non_finite())
            }
        };
        let per_step = if a.method == "dps" { 1 } else { sampler.calls_per_step() };
        finite_result(a.method, &x, start, watch_calls.map(|f| (f, per_step, a.steps)), hint)?;
        parts.push(x.to_device(Device::Cpu));
        start += len;
    }
    let x = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0) };
    write_npy(a.out, &x).with_context(|| format!("writing {}", a.out.display()))?;
    say(format!(
        "wrote {} posterior samples ({}) of shape {:?} to {}",
        n,
        a.method,
        &x.size()[1..],
        a.out.display()
    ))?;
    report_consistency(&obs, &x)
}

/// Prints how the posterior samples fit their own observations (residual-to-noise ratio
/// `||y − A x|| / (σ_y √m)`, about 1 for exact posterior samples) and warns when more than 0.1 % of them are
/// above 5 noise levels.
fn report_consistency(obs: &Observation, x: &Tensor) -> Result<()> {
    use diem_em::diagnostics::{estep_consistency, EStepConsistency};
    let c = estep_consistency(obs, x, f64::INFINITY)
        .context("checking the samples against their observations")?;
    say(format!(
        "consistency with the observations: residual/noise ratio median {:.3}, p99 {:.3}, max {:.3e}; \
         {} of {} samples above {} ({:.2} %); largest |x| {:.3e}",
        c.residual_ratio_median,
        c.residual_ratio_p99,
        c.residual_ratio_max,
        c.inconsistent,
        c.rows,
        EStepConsistency::INCONSISTENT_RATIO,
        100.0 * c.inconsistent_fraction,
        c.max_abs
    ))?;
    if c.inconsistent_fraction > EStepConsistency::WARN_FRACTION {
        warn(format!(
            "warning: {:.2} % of the posterior samples do not fit their observations (residual above {} noise \
             levels): the prior or the solver is at fault for them; more solver iterations, another --solver, or \
             a covariance heuristic (mmps-cov-x) may help",
            100.0 * c.inconsistent_fraction,
            EStepConsistency::INCONSISTENT_RATIO
        ));
    }
    Ok(())
}

/// `Σ_x = I` for the heuristics that ignore Σ_x (only `cov_x` reads it).
fn identity_cov(obs: &Observation) -> Dplr {
    Dplr::identity(obs.operator.x_numel(), Kind::Float, obs.y.device())
}
