//! The manifold experiment's [`LapObserver`]: evaluates the initial Gaussian and every lap's prior against
//! the ground truth, draws the corner plots and keeps `report.md` up to date after every lap.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diem_sampling::NoiseRng;
use tch::{Kind, Tensor};

use crate::config::ManifoldConfig;
use crate::data::ManifoldData;
use crate::error::{ManifoldError, Result};
use crate::report::{write_report, EStepRecord, Evaluator, LapRecord, RECORDS_FILE};
use diem_em::config::SamplerSpec;
use diem_em::error::{EmError, Result as EmResult};
use diem_em::gaussian::GaussianPrior;
use diem_em::observer::{LapContext, LapObserver};

/// The file name of the Gaussian prior's corner plot in the run directory.
pub const GAUSSIAN_CORNER_FILE: &str = "corner-gaussian.png";
/// The file name of a lap's corner plot in its `lap-NNN` directory.
pub const LAP_CORNER_FILE: &str = "corner.png";

/// Evaluates every prior of a manifold run (docs/method.md §9a) and writes the report.
#[derive(Debug)]
pub struct ManifoldObserver {
    config: ManifoldConfig,
    evaluator: Evaluator,
    run_dir: PathBuf,
    records: Vec<LapRecord>,
    /// When this process's observer was created.
    started: Instant,
    /// Wall time of earlier processes of this run (from the records file).
    previous_seconds: f64,
    last_mark: Instant,
}

impl ManifoldObserver {
    /// An observer for the run in `run_dir` on `data`; reloads the records a previous (interrupted) process
    /// left in [`RECORDS_FILE`], so a resumed run's report covers every lap.
    ///
    /// # Errors
    /// Sinkhorn errors (the `OT_λ(u1, u2)` baseline); IO or JSON errors reading earlier records.
    pub fn new(config: &ManifoldConfig, data: &ManifoldData, run_dir: &Path) -> Result<Self> {
        let evaluator = Evaluator::new(data, config)?;
        let records = read_records(&run_dir.join(RECORDS_FILE))?;
        let previous_seconds = records.iter().map(|r| r.wall_seconds).sum();
        let now = Instant::now();
        Ok(Self {
            config: config.clone(),
            evaluator,
            run_dir: run_dir.to_path_buf(),
            records,
            started: now,
            previous_seconds,
            last_mark: now,
        })
    }

    /// The records so far (the Gaussian first, then every lap in order).
    pub fn records(&self) -> &[LapRecord] {
        &self.records
    }

    /// The evaluator (ground-truth sets and the Sinkhorn settings).
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    /// Wall time of the run so far (earlier processes included).
    pub fn total_seconds(&self) -> f64 {
        self.previous_seconds + self.started.elapsed().as_secs_f64()
    }

    fn push(&mut self, record: LapRecord) -> Result<()> {
        self.records.retain(|r| r.lap != record.lap);
        self.records.push(record);
        self.records.sort_by_key(|r| r.lap);
        write_report(&self.run_dir, &self.config, &self.records, self.total_seconds())
    }

    fn gaussian(&mut self, prior: &GaussianPrior) -> Result<()> {
        let fit_seconds = self.last_mark.elapsed().as_secs_f64();
        let start = Instant::now();
        let n = self.config.metric.points;
        let samples = gaussian_samples(prior, n, self.config.em.seed ^ 0x6A09_E667_F3BC_C908)?;
        let (sinkhorn, kept) = self.evaluator.divergence(&samples)?;
        self.evaluator.corner(
            &samples,
            &format!("Gaussian prior (lap −1), Sinkhorn {sinkhorn:.3e}"),
            &self.run_dir.join(GAUSSIAN_CORNER_FILE),
        )?;
        let record = LapRecord {
            lap: -1,
            loss_mean: None,
            loss_std: None,
            sinkhorn,
            sinkhorn_estep: None,
            kept,
            estep_seconds: fit_seconds,
            mstep_seconds: 0.0,
            eval_seconds: start.elapsed().as_secs_f64(),
            wall_seconds: self.last_mark.elapsed().as_secs_f64(),
            estep: EStepRecord::default(),
        };
        eprintln!("manifold: Gaussian prior: Sinkhorn {sinkhorn:.4e} (kept {kept:.3})");
        self.push(record)?;
        self.last_mark = Instant::now();
        Ok(())
    }

    fn lap(&mut self, ctx: &mut LapContext<'_>) -> Result<()> {
        let lap_seconds = self.last_mark.elapsed().as_secs_f64();
        let start = Instant::now();
        let (corrections, tau) = match ctx.config.estep.sampler {
            SamplerSpec::Pc { corrections, tau, .. } => (corrections, tau),
            _ => (1, 0.1),
        };
        let spec = SamplerSpec::Pc { steps: self.config.metric.prior_steps, corrections, tau };
        let samples = ctx.sample_prior(self.config.metric.points, &spec, ctx.seed(0))?;
        let (sinkhorn, kept) = self.evaluator.divergence(&samples)?;
        let sinkhorn_estep = match ctx.kept.size()[0] {
            k if k >= 2 => Some(self.evaluator.divergence(ctx.kept)?.0),
            _ => None,
        };
        let path = ctx.lap_dir.join(LAP_CORNER_FILE);
        self.evaluator.corner(&samples, &format!("lap {} prior, Sinkhorn {sinkhorn:.3e}", ctx.lap), &path)?;
        ctx.add_metric("sinkhorn_prior", sinkhorn);
        if let Some(s) = sinkhorn_estep {
            ctx.add_metric("sinkhorn_estep", s);
        }
        ctx.add_metric("prior_kept_fraction", kept);
        let eval_seconds = start.elapsed().as_secs_f64();
        let metric = |key: &str| ctx.metrics().get(key).and_then(serde_json::Value::as_f64);
        let estep_seconds = metric("estep_seconds");
        let mstep_seconds = metric("mstep_seconds");
        let record = LapRecord {
            lap: ctx.lap as i64,
            loss_mean: metric("loss_mean"),
            loss_std: metric("loss_std"),
            sinkhorn,
            sinkhorn_estep,
            kept,
            // Without the run's own timings, the whole lap counts as E-step + M-step time.
            estep_seconds: estep_seconds.unwrap_or(lap_seconds - mstep_seconds.unwrap_or(0.0)),
            mstep_seconds: mstep_seconds.unwrap_or(0.0),
            eval_seconds,
            wall_seconds: self.last_mark.elapsed().as_secs_f64(),
            estep: EStepRecord::from_metrics(ctx.metrics()),
        };
        eprintln!(
            "manifold: lap {}: Sinkhorn prior {sinkhorn:.4e}, E-step samples {}, loss {}",
            ctx.lap,
            sinkhorn_estep.map_or_else(|| "–".into(), |s| format!("{s:.4e}")),
            record.loss_mean.map_or_else(|| "–".into(), |l| format!("{l:.4}")),
        );
        self.push(record)?;
        self.last_mark = Instant::now();
        Ok(())
    }
}

impl LapObserver for ManifoldObserver {
    fn name(&self) -> &str {
        "manifold"
    }

    fn on_gaussian(&mut self, _run_dir: &Path, prior: &GaussianPrior) -> EmResult<()> {
        self.gaussian(prior).map_err(|e| EmError::observer("manifold", e))
    }

    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> EmResult<()> {
        self.lap(ctx).map_err(|e| EmError::observer("manifold", e))
    }
}

/// `n` exact samples of the Gaussian prior `N(μ_x, Σ_x)`: `x = μ_x + L z` with `L L^T = Σ_x` (Cholesky of
/// the dense covariance, jittered by 1e-9 for the rank-deficient case), noise from `NoiseRng::seeded(seed)`.
/// Returned `[n, ..x_shape]` in f32 on the prior's device.
///
/// # Errors
/// [`ManifoldError::Torch`] when the Cholesky factorization fails.
pub fn gaussian_samples(prior: &GaussianPrior, n: i64, seed: u64) -> Result<Tensor> {
    let dim = prior.dim();
    let device = prior.mean.device();
    let cov = prior.cov_dense().to_kind(Kind::Double);
    let jitter = Tensor::eye(dim, (Kind::Double, device)) * 1e-9;
    let l = (cov + jitter).f_linalg_cholesky(false)?;
    let z = NoiseRng::seeded(seed).normal(&[n, dim], Kind::Double, device);
    let x = z.matmul(&l.transpose(0, 1)) + prior.mean.to_kind(Kind::Double).unsqueeze(0);
    let mut shape = vec![n];
    shape.extend(&prior.x_shape);
    Ok(x.reshape(shape.as_slice()).to_kind(Kind::Float))
}

fn read_records(path: &Path) -> Result<Vec<LapRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ManifoldError::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|source| ManifoldError::Json { path: path.into(), source }))
        .collect()
}
