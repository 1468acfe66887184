//! `diem sample` and `diem posterior`: draw from a trained prior or its posteriors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diem_em::{posterior_shard_observed, write_npy, EStepPlan};
use diem_models::{checkpoint, Denoiser, PriorModel};
use diem_operators::Observation;
use diem_sampling::{
    NoiseRng, PosteriorMethod, SamplerSpec, SolverMethod, SolverSpec, StepInfo, StepObserver,
};
use tch::{Device, Kind, Tensor};

use crate::checks::{check_memory, finite_result, output_path, say, warn, FirstNonFinite, Watch};

/// Loads the prior named by `path` (a checkpoint directory or a run directory: its last lap).
pub fn load_prior(path: &Path, device: Device) -> Result<(PathBuf, PriorModel)> {
    let dir = diem_em::resolve_checkpoint(path).with_context(|| format!("--prior {}", path.display()))?;
    let (model, _ema) =
        checkpoint::load(&dir, device).with_context(|| format!("loading the prior in {}", dir.display()))?;
    Ok((dir, model))
}

/// The sampler named on the command line.
pub fn sampler_spec(name: &str, steps: usize) -> Result<SamplerSpec> {
    if steps > diem_sampling::MAX_STEPS {
        bail!("--steps must be at most {}, got {steps}", diem_sampling::MAX_STEPS);
    }
    SamplerSpec::from_name(name, steps).map_err(|_| {
        anyhow::anyhow!(
            "--sampler: unknown sampler {name:?} (expected one of {})",
            SamplerSpec::NAMES.join(", ")
        )
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

/// Records the first sampler step after which a sample holds NaN or ±∞ (step index, σ_t, rows).
#[derive(Default)]
struct FirstBadStep(Option<FirstNonFinite>);

impl StepObserver for FirstBadStep {
    fn on_step(&mut self, info: &StepInfo, x: &Tensor) {
        if self.0.is_none() {
            let rows = diem_em::error::non_finite_rows(x);
            if !rows.is_empty() {
                self.0 = Some((info.index, info.sigma_t, rows));
            }
        }
    }
}

/// The method `--method`, `--solver`, `--iterations`, `--zeta` and `--unguarded` name, through
/// [`PosteriorMethod::from_name`].
pub fn posterior_method(a: &PosteriorArgs<'_>) -> Result<PosteriorMethod> {
    let solver_method = SolverMethod::from_name(a.solver).map_err(|_| {
        anyhow::anyhow!("--solver: unknown solver {:?} (expected cg, gmres or bicgstab)", a.solver)
    })?;
    if a.iterations > diem_sampling::MAX_ITERATIONS {
        bail!("--iterations must be at most {}, got {}", diem_sampling::MAX_ITERATIONS, a.iterations);
    }
    let method = PosteriorMethod::from_name(a.method, SolverSpec::new(solver_method, a.iterations))
        .map_err(|_| {
            anyhow::anyhow!(
                "--method: unknown method {:?} (expected one of {})",
                a.method,
                PosteriorMethod::NAMES.join(", ")
            )
        })?
        .with_zeta(a.zeta);
    Ok(if a.unguarded { method.without_safeguards() } else { method })
}

/// `diem posterior`: one posterior sample per observation, chunked, chunk `c` seeded `seed + c`, through the
/// E-step's chunked loop ([`posterior_shard_observed`]).
pub fn posterior(a: &PosteriorArgs<'_>) -> Result<()> {
    if !PosteriorMethod::NAMES.contains(&a.method) {
        bail!(
            "--method: unknown method {:?} (expected one of {})",
            a.method,
            PosteriorMethod::NAMES.join(", ")
        );
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
    let method = posterior_method(a)?;
    let sigma_x = if method.needs_sigma_x() {
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
    let hint = if a.method == "mmps-zeros" && a.unguarded {
        "; mmps-zeros takes the posterior covariance V to be 0, which over-corrects by about \
         (prior variance) / σ_y² per step when the noise is small: drop --unguarded, or use mmps, mmps-cov-x \
         or mmps-ones"
    } else {
        ""
    };
    let plan = EStepPlan::new(method.resolve(sigma_x.as_ref())?, 1)
        .chunk(a.chunk)
        .kind(Kind::Float)
        .consecutive_seeds(a.seed);
    let chunks = diem_em::estep::chunk_count(n, 1, a.chunk);
    // Every step is watched, so a non-finite result names the step where it appeared.
    let mut watch = FirstBadStep::default();
    let shard = posterior_shard_observed(prior, &obs, sampler.as_ref(), &plan, 0..chunks, None, &mut watch)?;
    let x = shard.samples.to_device(Device::Cpu);
    finite_result(a.method, &x, 0, watch.0.map(|f| (f, 1, a.steps)), hint)?;
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
