//! The experiment's [`LapObserver`]: per lap, an image grid of prior samples (DDIM from `μ_x + σ(1) z`), a
//! grid of ground truth / observation / posterior sample for the first observations, FID and IS when an
//! Inception network is given (added to `metrics.jsonl`), and an up-to-date `report.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diem_em::{EmError, GaussianPrior, LapContext, LapObserver, SamplerSpec};
use diem_plot::{image_grid, Image};
use diem_sampling::NoiseRng;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::config::CifarConfig;
use crate::error::{CifarError, Result};
use crate::fid::FidEvaluator;
use crate::format::to_uint8;
use crate::report::write_report;

/// A lap's grid of prior samples, in its `lap-NNN` directory.
pub const PRIOR_GRID_FILE: &str = "prior.png";
/// A lap's grid of ground truth (row 1), observations (row 2, deleted pixels black) and posterior samples
/// (row 3), in its `lap-NNN` directory.
pub const POSTERIOR_GRID_FILE: &str = "posterior.png";
/// The grid of samples of the initial Gaussian prior, in the run directory.
pub const GAUSSIAN_GRID_FILE: &str = "gaussian.png";

/// `uint8 [N, C, H, W]` images as plot images (values / 255).
pub fn to_plot_images(images_u8: &Tensor) -> Result<Vec<Image>> {
    let size = images_u8.size();
    if size.len() != 4 {
        return Err(CifarError::config("images", format!("must be [N, C, H, W], got {size:?}")));
    }
    let (c, h, w) = (size[1] as usize, size[2] as usize, size[3] as usize);
    let host = images_u8.to_device(Device::Cpu).to_kind(Kind::Float).contiguous() / 255.0;
    let flat = Vec::<f32>::try_from(host.flatten(0, -1))?;
    Ok(flat
        .chunks_exact(c * h * w)
        .map(|d| Image { channels: c, height: h, width: w, data: d.to_vec() })
        .collect())
}

/// Writes `uint8 [N, 3, H, W]` images as a grid with `cols` columns (3× enlarged) to `path`.
///
/// # Errors
/// Plot errors naming the file.
pub fn write_grid(images_u8: &Tensor, cols: usize, path: &Path) -> Result<()> {
    Ok(image_grid(&to_plot_images(images_u8)?, cols.max(1), 3, path)?)
}

/// Columns of a near-square grid of `n` images.
fn square_cols(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

/// `n` exact samples of the Gaussian prior `N(μ, D I + U Vᵀ)` (PPCA form, `V = U`): `μ + √D ⊙ z₁ + U z₂`,
/// noise from `NoiseRng::seeded(seed)`; `[n, ..x_shape]` f32.
pub fn gaussian_samples(prior: &GaussianPrior, n: i64, seed: u64) -> Tensor {
    let device = prior.mean.device();
    let dim = prior.dim();
    let mut rng = NoiseRng::seeded(seed);
    let d = prior.cov.d().to_kind(Kind::Double).clamp_min(0.0).sqrt();
    let mut x =
        prior.mean.to_kind(Kind::Double).unsqueeze(0) + rng.normal(&[n, dim], Kind::Double, device) * d;
    if let Some(u) = prior.cov.u() {
        let r = u.size()[1];
        x += rng.normal(&[n, r], Kind::Double, device).matmul(&u.to_kind(Kind::Double).tr());
    }
    let mut shape = vec![n];
    shape.extend(&prior.x_shape);
    x.reshape(shape.as_slice()).to_kind(Kind::Float)
}

/// The per-lap observer of the corrupted CIFAR-10 run.
#[derive(Debug)]
pub struct CifarObserver {
    config: CifarConfig,
    images: Tensor,
    fid: Option<FidEvaluator>,
    inception: Option<String>,
    run_dir: PathBuf,
}

impl CifarObserver {
    /// An observer for the run in `run_dir`; `images_u8` are the clean training images of the observations
    /// (`uint8 [N, 3, 32, 32]`, shown in the posterior grid); `fid` evaluates FID/IS when given (`inception`
    /// names its file in the report).
    pub fn new(
        config: &CifarConfig,
        images_u8: Tensor,
        fid: Option<FidEvaluator>,
        inception: Option<String>,
        run_dir: &Path,
    ) -> Self {
        Self { config: config.clone(), images: images_u8, fid, inception, run_dir: run_dir.to_path_buf() }
    }

    fn bar(&self, len: u64, what: &str) -> diem_models::progress::Progress {
        diem_models::progress::progress_bar(len, what, self.config.em.progress)
    }

    /// `n` prior samples in chunks of the eval batch, quantized to `uint8` on the CPU; chunk `c` uses
    /// `ctx.seed(base + c)`.
    fn prior_samples(&self, ctx: &LapContext<'_>, n: usize, base: u64, what: &str) -> Result<Tensor> {
        let spec = SamplerSpec::Ddim { steps: self.config.eval.prior_steps };
        let batch = self.config.eval.batch.max(1);
        let n = n as i64;
        let bar = self.bar(((n + batch - 1) / batch) as u64, what);
        let mut parts = Vec::new();
        let mut start = 0;
        let mut c = 0;
        while start < n {
            let len = batch.min(n - start);
            let x = ctx.sample_prior(len, &spec, ctx.seed(base + c))?;
            parts.push(to_uint8(&x).to_device(Device::Cpu));
            bar.inc(1);
            start += len;
            c += 1;
        }
        bar.finish_and_clear();
        Ok(Tensor::cat(&parts, 0))
    }

    fn posterior_grid(&self, ctx: &LapContext<'_>) -> Result<()> {
        let k =
            (self.config.eval.posterior_grid as i64).min(ctx.observations.len()).min(self.images.size()[0]);
        let obs = ctx.observations.narrow(0, k);
        let ones = Tensor::ones(obs.y.size(), (Kind::Float, obs.y.device()));
        let mask = obs.operator.apply(&ones).to_kind(Kind::Uint8).to_device(Device::Cpu);
        let observed = to_uint8(&obs.y).to_device(Device::Cpu) * mask;
        let samples = to_uint8(&ctx.samples.narrow(0, 0, k)).to_device(Device::Cpu);
        let rows = Tensor::cat(&[self.images.narrow(0, 0, k), observed, samples], 0);
        write_grid(&rows, k as usize, &ctx.lap_dir.join(POSTERIOR_GRID_FILE))
    }

    fn lap(&mut self, ctx: &mut LapContext<'_>) -> Result<()> {
        let start = Instant::now();
        let eval = self.config.eval.clone();
        let grid = self.prior_samples(ctx, eval.grid, 0, "grid samples")?;
        write_grid(&grid, square_cols(eval.grid), &ctx.lap_dir.join(PRIOR_GRID_FILE))?;
        self.posterior_grid(ctx)?;
        let last = ctx.lap + 1 == ctx.config.laps;
        if let Some(fid) = &self.fid {
            if (ctx.lap + 1) % eval.every == 0 || last {
                let t = Instant::now();
                let samples = self.prior_samples(ctx, eval.samples, 1 << 32, "FID/IS samples")?;
                let r = fid.evaluate(&samples, eval.batch, eval.splits)?;
                ctx.add_metric("fid", r.fid);
                ctx.add_metric("is_mean", r.is_mean);
                ctx.add_metric("is_std", r.is_std);
                ctx.add_metric("eval_samples", r.count);
                ctx.add_metric("fid_is_seconds", t.elapsed().as_secs_f64());
                eprintln!(
                    "diem-cifar: lap {}: FID {:.2}, IS {} ({} samples)",
                    ctx.lap,
                    r.fid,
                    r.is_mean.map_or_else(|| "–".into(), |m| format!("{m:.2}")),
                    r.count
                );
            }
        }
        ctx.add_metric("eval_seconds", start.elapsed().as_secs_f64());
        let mut lines: Vec<Value> =
            diem_em::io::read_jsonl(&self.run_dir.join(diem_em::layout::METRICS_FILE))?
                .into_iter()
                .filter(|l| l.get("lap").and_then(Value::as_u64).is_some_and(|k| (k as usize) < ctx.lap))
                .collect();
        lines.push(Value::Object(ctx.metrics().clone()));
        write_report(&self.run_dir, &self.config, &lines, self.inception.as_deref())
    }
}

impl LapObserver for CifarObserver {
    fn name(&self) -> &str {
        "cifar"
    }

    fn on_gaussian(&mut self, run_dir: &Path, prior: &GaussianPrior) -> diem_em::Result<()> {
        let n = self.config.eval.grid;
        let seed = diem_em::derive_seed(self.config.em.seed, diem_em::SeedPurpose::Observer, u64::MAX, 0);
        let x = gaussian_samples(prior, n as i64, seed);
        write_grid(&to_uint8(&x), square_cols(n), &run_dir.join(GAUSSIAN_GRID_FILE))
            .map_err(|e| EmError::observer("cifar", e))
    }

    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> diem_em::Result<()> {
        self.lap(ctx).map_err(|e| EmError::observer("cifar", e))
    }
}
