//! [`MriObserver`]: per-lap figures of the prior and of posteriors of held-out observations at several
//! accelerations, with PSNR/SSIM of the posterior mean (a diagnostic: the paper reports none for MRI).

use std::path::{Path, PathBuf};

use diem_em::{
    posterior_samples, EStepPlan, EmError, GaussianPrior, LapContext, LapObserver, Result as EmResult,
    SeedPurpose,
};
use diem_operators::Observation;
use diem_plot::{image_grid, Image};
use diem_sampling::NoiseRng;
use tch::{Kind, Tensor};

use crate::config::FastMriConfig;
use crate::error::{FastMriError, Result};
use crate::prepare::{mix_seed, simulate_kspace};
use crate::report::write_report;

/// The Gaussian prior's figure in the run directory (μ_x, then samples).
pub const GAUSSIAN_FIGURE: &str = "gaussian.png";
/// A lap's prior samples figure (in `lap-NNN/`).
pub const PRIOR_FIGURE: &str = "prior.png";
/// A lap's posterior figure (in `lap-NNN/`): one row per (held-out image, R): truth, `Aᵀy`, samples, mean.
pub const POSTERIOR_FIGURE: &str = "posterior.png";
/// The zero-filled figure of the held-out observations (run directory, written once).
pub const ZERO_FILLED_FIGURE: &str = "zero-filled.png";

/// One held-out observation set at one acceleration.
#[derive(Debug)]
struct Heldout {
    r: f64,
    obs: Observation,
    zero_filled: Tensor,
}

/// Draws the per-lap figures and diagnostics of the MRI run and keeps `report.md` current.
#[derive(Debug)]
pub struct MriObserver {
    config: FastMriConfig,
    run_dir: PathBuf,
    truth: Tensor,
    heldout: Vec<Heldout>,
    notes: Vec<String>,
}

/// Images in `[−2, 2]` (`[N, 1, H, W]`) as grayscale grid images, mapped by `(x + 2)/4`.
pub fn to_images(x: &Tensor) -> Result<Vec<Image>> {
    let x = ((x.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu) + 2.0) / 4.0).contiguous();
    let size = x.size();
    let (h, w) = (size[2] as usize, size[3] as usize);
    let mut out = Vec::new();
    for i in 0..size[0] {
        let data = Vec::<f32>::try_from(&x.get(i).select(0, 0).flatten(0, -1))?;
        out.push(Image { channels: 1, height: h, width: w, data });
    }
    Ok(out)
}

impl MriObserver {
    /// An observer for the run in `run_dir`: simulates the held-out observations (the first
    /// `figures.heldout` images of `heldout`) at every acceleration of `config.figures` with fixed seeds, and
    /// writes [`ZERO_FILLED_FIGURE`]. `notes` are added to the report.
    ///
    /// # Errors
    /// Operator or plot errors.
    pub fn new(config: &FastMriConfig, heldout: &Tensor, run_dir: &Path, notes: Vec<String>) -> Result<Self> {
        let m = config.figures.heldout.min(heldout.size()[0]);
        let truth = heldout.narrow(0, 0, m).to_kind(Kind::Float);
        let mut sets = Vec::new();
        let noise_std = config.prepare.noise_std;
        for (i, &r) in config.figures.accelerations.iter().enumerate() {
            let seed = mix_seed(config.em.seed, 1000 + i as u64);
            let obs = simulate_kspace(&truth, r, noise_std, seed, mix_seed(seed, 1), 256, None)?;
            let zero_filled = tch::no_grad(|| obs.operator.adjoint(&obs.y));
            sets.push(Heldout { r, obs, zero_filled });
        }
        let observer = Self { config: config.clone(), run_dir: run_dir.into(), truth, heldout: sets, notes };
        let mut images = Vec::new();
        for j in 0..m {
            images.extend(to_images(&observer.truth.narrow(0, j, 1))?);
            for h in &observer.heldout {
                images.extend(to_images(&h.zero_filled.narrow(0, j, 1))?);
            }
        }
        let cols = 1 + observer.heldout.len();
        image_grid(&images, cols, config.figures.scale, &run_dir.join(ZERO_FILLED_FIGURE))?;
        Ok(observer)
    }

    /// The held-out ground truth `[M, 1, H, W]`.
    pub fn truth(&self) -> &Tensor {
        &self.truth
    }

    fn gaussian(&mut self, prior: &GaussianPrior) -> Result<()> {
        let n = self.config.figures.prior_samples;
        let samples = gaussian_samples(prior, n, mix_seed(self.config.em.seed, 7))?;
        let mean = prior.mean_shaped().unsqueeze(0).to_kind(Kind::Float);
        let mut images = to_images(&mean)?;
        images.extend(to_images(&samples)?);
        image_grid(&images, images.len(), self.config.figures.scale, &self.run_dir.join(GAUSSIAN_FIGURE))?;
        Ok(())
    }

    fn lap(&mut self, ctx: &mut LapContext<'_>) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let f = &self.config.figures;
        let prior = ctx.sample_prior(f.prior_samples, &ctx.config.estep.sampler, ctx.seed(0))?;
        image_grid(&to_images(&prior)?, f.prior_samples as usize, f.scale, &ctx.lap_dir.join(PRIOR_FIGURE))?;
        let sampler = ctx.config.estep.sampler.build(ctx.schedule())?;
        let cov = ctx.gaussian.cov.to_kind(Kind::Float);
        let k = f.posterior_samples;
        let m = self.truth.size()[0];
        let mut rows: Vec<Vec<Image>> = vec![Vec::new(); (m as usize) * self.heldout.len()];
        for (i, h) in self.heldout.iter().enumerate() {
            let plan = EStepPlan::new(ctx.config.estep.posterior.resolve(Some(&cov))?, k)
                .chunk(ctx.config.estep.chunk_size as i64)
                .seeded(mix_seed(ctx.config.seed, 2000 + ctx.lap as u64), SeedPurpose::Observer, i as u64);
            let x = posterior_samples(ctx.prior, &h.obs, sampler.as_ref(), &plan, None)?;
            let mut shape = vec![k as i64, m];
            shape.extend(&x.size()[1..]);
            let x = x.reshape(shape.as_slice());
            let mean = x.mean_dim(0, false, Kind::Float);
            let psnr = diem_metrics::psnr(&mean, &self.truth, 4.0)?.mean(Kind::Double).double_value(&[]);
            let ssim = diem_metrics::ssim(&mean, &self.truth, 4.0)?.mean(Kind::Double).double_value(&[]);
            let zf = &h.zero_filled;
            let psnr_zf = diem_metrics::psnr(zf, &self.truth, 4.0)?.mean(Kind::Double).double_value(&[]);
            let ssim_zf = diem_metrics::ssim(zf, &self.truth, 4.0)?.mean(Kind::Double).double_value(&[]);
            let tag = r_tag(h.r);
            ctx.add_metric(format!("psnr_{tag}"), psnr);
            ctx.add_metric(format!("ssim_{tag}"), ssim);
            ctx.add_metric(format!("psnr_zf_{tag}"), psnr_zf);
            ctx.add_metric(format!("ssim_zf_{tag}"), ssim_zf);
            for j in 0..m {
                let row = &mut rows[j as usize * self.heldout.len() + i];
                row.extend(to_images(&self.truth.narrow(0, j, 1))?);
                row.extend(to_images(&zf.narrow(0, j, 1))?);
                row.extend(to_images(&x.select(1, j))?);
                row.extend(to_images(&mean.narrow(0, j, 1))?);
            }
        }
        let images: Vec<Image> = rows.into_iter().flatten().collect();
        image_grid(&images, 3 + k, f.scale, &ctx.lap_dir.join(POSTERIOR_FIGURE))?;
        let metrics_path = self.run_dir.join(diem_em::layout::METRICS_FILE);
        let mut lines: Vec<serde_json::Value> = diem_em::io::read_jsonl(&metrics_path)?
            .into_iter()
            .filter(|l| {
                l.get("lap").and_then(serde_json::Value::as_u64).is_some_and(|l| (l as usize) < ctx.lap)
            })
            .collect();
        lines.push(serde_json::Value::Object(ctx.metrics().clone()));
        write_report(&self.run_dir, &self.config, &lines, &self.notes)?;
        eprintln!(
            "fastmri: lap {}: loss {}, {}",
            ctx.lap,
            ctx.metrics()
                .get("loss_mean")
                .and_then(serde_json::Value::as_f64)
                .map_or("–".into(), |l| format!("{l:.4}")),
            self.heldout
                .iter()
                .map(|h| {
                    let t = r_tag(h.r);
                    let get = |key: String| {
                        ctx.metrics().get(&key).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN)
                    };
                    format!(
                        "R={}: PSNR {:.2} dB (zero-filled {:.2})",
                        h.r,
                        get(format!("psnr_{t}")),
                        get(format!("psnr_zf_{t}"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

/// The metric suffix of an acceleration: `r4`, `r6`, `r2.5`.
pub fn r_tag(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("r{}", r as i64)
    } else {
        format!("r{r}")
    }
}

/// `n` exact samples of the Gaussian prior `N(μ_x, diag(D) + U Uᵀ)`: `x = μ_x + U z_r + √D ⊙ z`, noise from
/// `NoiseRng::seeded(seed)`, returned `[n, ..x_shape]` f32. Needs no dense covariance (N = 102,400 for MRI).
///
/// # Errors
/// [`FastMriError::Config`] when the covariance is not symmetric DPLR (`V ≠ Uᵀ` is not checked; PPCA makes
/// it so).
pub fn gaussian_samples(prior: &GaussianPrior, n: i64, seed: u64) -> Result<Tensor> {
    let dim = prior.dim();
    let device = prior.mean.device();
    let mut rng = NoiseRng::seeded(seed);
    let d = prior.cov.d().to_kind(Kind::Double);
    if d.size() != [dim] {
        return Err(FastMriError::config("gaussian", format!("expected an unbatched DPLR of size {dim}")));
    }
    let z = rng.normal(&[n, dim], Kind::Double, device);
    let mut x = z * d.clamp_min(0.0).sqrt().unsqueeze(0) + prior.mean.to_kind(Kind::Double).unsqueeze(0);
    if let Some(u) = prior.cov.u() {
        let r = u.size()[1];
        let zr = rng.normal(&[n, r], Kind::Double, device);
        x += zr.matmul(&u.to_kind(Kind::Double).transpose(0, 1));
    }
    let mut shape = vec![n];
    shape.extend(&prior.x_shape);
    Ok(x.reshape(shape.as_slice()).to_kind(Kind::Float))
}

impl LapObserver for MriObserver {
    fn name(&self) -> &str {
        "fastmri"
    }

    fn on_gaussian(&mut self, _run_dir: &Path, prior: &GaussianPrior) -> EmResult<()> {
        self.gaussian(prior).map_err(|e| EmError::observer("fastmri", e))
    }

    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> EmResult<()> {
        self.lap(ctx).map_err(|e| EmError::observer("fastmri", e))
    }
}
