//! `diem sample` and `diem posterior`: draw from a trained prior or its posteriors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use diem_em::{write_npy, Covariance, PosteriorSpec, SamplerSpec, SolverMethod, SolverSpec};
use diem_linalg::Dplr;
use diem_models::{checkpoint, Denoiser, PriorModel};
use diem_operators::Observation;
use diem_sampling::{
    DiffPir, DiffPirConfig, Dps, Mmps, NoiseRng, Pgdm, PgdmConfig, Sampler, TimeGrid, Tmpd, TmpdConfig,
};
use tch::{Device, Kind, Tensor};

/// Loads the prior named by `path` (a checkpoint directory or a run directory: its last lap).
pub fn load_prior(path: &Path, device: Device) -> Result<(PathBuf, PriorModel)> {
    let dir = diem_em::resolve_checkpoint(path).with_context(|| format!("--prior {}", path.display()))?;
    let (model, _ema) =
        checkpoint::load(&dir, device).with_context(|| format!("loading the prior in {}", dir.display()))?;
    Ok((dir, model))
}

/// The sampler named on the command line.
pub fn sampler_spec(name: &str, steps: usize) -> Result<SamplerSpec> {
    Ok(match name {
        "ddpm" => SamplerSpec::Ddpm { steps },
        "ddim" => SamplerSpec::Ddim { steps },
        "pc" => SamplerSpec::Pc { steps, corrections: 1, tau: 0.1 },
        other => bail!("--sampler: unknown sampler {other:?} (expected ddpm, ddim or pc)"),
    })
}

/// The per-sample latent shape of a model: its prior mean's shape.
fn latent_shape(model: &PriorModel, dir: &Path) -> Result<Vec<i64>> {
    match model.denoiser.mean() {
        Some(m) => Ok(m.size()),
        None => {
            bail!("{}: the checkpoint carries no prior mean, so its sample shape is unknown", dir.display())
        }
    }
}

/// `diem sample`.
pub fn sample(
    prior: &Path,
    n: i64,
    out: &Path,
    sampler: &str,
    steps: usize,
    seed: u64,
    device: Device,
) -> Result<()> {
    if n < 1 {
        bail!("-n must be ≥ 1, got {n}");
    }
    let (dir, model) = load_prior(prior, device)?;
    let mut shape = vec![n];
    shape.extend(latent_shape(&model, &dir)?);
    let s = sampler_spec(sampler, steps)?.build(model.schedule)?;
    let x = s.sample(&model.denoiser, &shape, Kind::Float, device, &mut NoiseRng::seeded(seed))?;
    write_npy(out, &x).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} samples of shape {:?} to {}", n, &shape[1..], out.display());
    Ok(())
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
    let (dir, model) = load_prior(a.prior, a.device)?;
    let obs = Observation::load(a.observations, a.device)
        .with_context(|| format!("reading observations {}", a.observations.display()))?;
    let solver_method = match a.solver {
        "cg" => SolverMethod::Cg,
        "gmres" => SolverMethod::Gmres,
        "bicgstab" => SolverMethod::Bicgstab,
        other => bail!("--solver: unknown solver {other:?} (expected cg, gmres or bicgstab)"),
    };
    let solver = SolverSpec { method: solver_method, iterations: a.iterations, rtol: None };
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
    let sampler = spec.build(model.schedule)?;
    let prior: &dyn Denoiser = &model.denoiser;
    let n = obs.len();
    let chunk = a.chunk.max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let sub = obs.narrow(start, len);
        let mut shape = vec![len];
        shape.extend(sub.operator.x_shape());
        let mut rng = NoiseRng::seeded(a.seed.wrapping_add((start / chunk) as u64));
        let x: Tensor = match (a.method, covariance) {
            (_, Some(cov)) => {
                let identity = identity_cov(&sub);
                let cfg =
                    PosteriorSpec { covariance: cov, solver }.to_mmps(sigma_x.as_ref().unwrap_or(&identity));
                let d = Mmps::from_observation(prior, &sub, cfg)?;
                sampler.sample(&d, &shape, Kind::Float, a.device, &mut rng)?
            }
            ("pgdm", None) => {
                let d = Pgdm::from_observation(prior, &sub, PgdmConfig { solver: solver.to_solver() })?;
                sampler.sample(&d, &shape, Kind::Float, a.device, &mut rng)?
            }
            ("tmpd", None) => {
                let d = Tmpd::from_observation(prior, &sub, TmpdConfig { solver: solver.to_solver() })?;
                sampler.sample(&d, &shape, Kind::Float, a.device, &mut rng)?
            }
            ("diffpir", None) => {
                let cfg = DiffPirConfig { solver: solver.to_solver(), ..DiffPirConfig::default() };
                let d = DiffPir::from_observation(prior, &sub, cfg)?;
                sampler.sample(&d, &shape, Kind::Float, a.device, &mut rng)?
            }
            _ => {
                let dps = Dps::from_observation(model.schedule, TimeGrid::uniform(a.steps)?, &sub, a.zeta)?;
                dps.sample(prior, &shape, Kind::Float, a.device, &mut rng)?
            }
        };
        parts.push(x);
        start += len;
    }
    let x = Tensor::cat(&parts, 0);
    write_npy(a.out, &x).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} posterior samples ({}) of shape {:?} to {}",
        n,
        a.method,
        &x.size()[1..],
        a.out.display()
    );
    Ok(())
}

/// `Σ_x = I` for the heuristics that ignore Σ_x (only `cov_x` reads it).
fn identity_cov(obs: &Observation) -> Dplr {
    Dplr::identity(obs.operator.x_numel(), Kind::Float, obs.y.device())
}
