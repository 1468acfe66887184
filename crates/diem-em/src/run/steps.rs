//! The steps of an [`EmRun`]: the Gaussian initialization, E-steps (training and validation sets), M-steps
//! and one whole lap with its files, metrics and observers (SPEC.md §7.4, §8).

use diem_models::{checkpoint, Denoiser, Ema, PriorModel, TrainReport};
use diem_operators::Observation;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tch::{Kind, Tensor};

use super::EmRun;
use crate::config::{GaussianEmConfig, LapOrder};
use crate::diagnostics::{observation_diagnostic, sample_stats};
use crate::error::{EmError, Result};
use crate::estep::{chunk_count, posterior_samples, EStepPlan};
use crate::gaussian::{cov_x_mmps, fit_gaussian_with, GaussianPrior};
use crate::io::{create_dir, read_jsonl, write_jsonl, write_npy};
use crate::layout::{
    lap_dir, GAUSSIAN_FILE, INIT_DIR, METRICS_FILE, SAMPLES_FILE, TRAIN_LOG_FILE, VALIDATION_FILE,
};
use crate::mstep::{filter_samples, loss_summary, m_step_validated, ValidationRecord};
use crate::observer::LapContext;
use crate::seed::{derive_seed, torch_seed, SeedPurpose};

impl EmRun {
    pub(super) fn fit_initial_gaussian(&mut self) -> Result<()> {
        let g = &self.config.gaussian;
        let indices = g.pair_indices(self.observations.len());
        let chunks = chunk_count(indices.len() as i64, 1, g.chunk_size as i64) * g.iterations as u64;
        let bar = self.bar(chunks, "Gaussian EM chunks");
        // Only the pairs the fit uses go to the device (all of them when the data already live there); the
        // moved subset is then taken whole.
        let (moved, all_of_it);
        let (pairs, g) = if self.observations.y.device() == self.device {
            (&self.observations, g)
        } else {
            moved = self.observations.select(&indices).to_device(self.device);
            all_of_it = GaussianEmConfig { max_pairs: None, stride: 1, ..g.clone() };
            (&moved, &all_of_it)
        };
        let prior = fit_gaussian_with(
            pairs,
            g,
            self.config.schedule(),
            self.config.seed,
            Some(&bar),
            &mut |_, _| Ok(()),
        )?;
        bar.finish_and_clear();
        prior.save(&self.dir.join(GAUSSIAN_FILE))?;
        for o in &mut self.observers {
            o.on_gaussian(&self.dir, &prior)?;
        }
        self.gaussian = Some(prior);
        self.state.gaussian_done = true;
        self.commit()
    }

    pub(super) fn new_model(&self) -> Result<PriorModel> {
        let _rng = crate::mstep::TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(torch_seed(derive_seed(self.config.seed, SeedPurpose::Init, 0, 0)));
        let mut model = PriorModel::new(self.config.network.clone(), self.config.schedule(), self.device)?;
        let g = self
            .gaussian()
            .ok_or_else(|| EmError::config("gaussian", "the Gaussian prior must be fitted first"))?;
        model.denoiser.set_mean(Some(g.mean_shaped().to_kind(Kind::Float).to_device(self.device)));
        Ok(model)
    }

    pub(super) fn current_gaussian(&self) -> Result<&GaussianPrior> {
        self.gaussian.as_ref().ok_or_else(|| EmError::config("gaussian", "the Gaussian prior is not fitted"))
    }

    /// E-step under the Gaussian prior (exact `cov_x` MMPS) or the model (configured posterior).
    pub(super) fn e_step(&self, lap: u64, purpose_lap_gaussian: bool) -> Result<Tensor> {
        let k = self.config.estep.samples_per_observation;
        self.e_step_on(&self.observations, k, lap, purpose_lap_gaussian, SeedPurpose::EStepChunk)
    }

    /// The lap's validation posterior samples (one per validation observation), drawn like [`Self::e_step`]'s
    /// with their own seeds; `None` without a validation set.
    pub(super) fn validation_samples(&self, lap: u64, purpose_lap_gaussian: bool) -> Result<Option<Tensor>> {
        match &self.validation {
            None => Ok(None),
            Some(v) => {
                Some(self.e_step_on(v, 1, lap, purpose_lap_gaussian, SeedPurpose::Validation)).transpose()
            }
        }
    }

    /// `k` posterior samples per observation of `obs` (see [`Self::e_step`]), chunk seeds from `purpose`.
    pub(super) fn e_step_on(
        &self,
        obs: &Observation,
        k: usize,
        lap: u64,
        purpose_lap_gaussian: bool,
        purpose: SeedPurpose,
    ) -> Result<Tensor> {
        let e = &self.config.estep;
        let gaussian = self.current_gaussian()?;
        let sampler = e.sampler.build(self.config.schedule())?;
        let x_numel = gaussian.dim();
        let chunk = e.effective_chunk(x_numel);
        let what =
            if purpose == SeedPurpose::Validation { "validation E-step chunks" } else { "E-step chunks" };
        let bar = self.bar(chunk_count(obs.len(), k, chunk), what);
        let gaussian_f32 = GaussianPrior {
            mean: gaussian.mean.to_kind(Kind::Float),
            cov: gaussian.cov.to_kind(Kind::Float),
            x_shape: gaussian.x_shape.clone(),
        };
        let plan = |mmps| EStepPlan {
            mmps,
            samples_per_observation: k,
            chunk,
            kind: Kind::Float,
            seed: self.config.seed,
            purpose,
            lap,
            device: Some(self.device),
        };
        let samples = if purpose_lap_gaussian {
            let denoiser = gaussian_f32.denoiser()?;
            let mmps = cov_x_mmps(&gaussian_f32, &e.posterior.solver);
            posterior_samples(&denoiser, obs, sampler.as_ref(), &plan(mmps), Some(&bar))?
        } else {
            let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
            let mmps = e.posterior.to_mmps(&gaussian_f32.cov);
            let prior: &dyn Denoiser = &model.denoiser;
            posterior_samples(prior, obs, sampler.as_ref(), &plan(mmps), Some(&bar))?
        };
        bar.finish_and_clear();
        Ok(samples)
    }

    pub(super) fn initial_samples(&mut self) -> Result<()> {
        // π_0's chunks use a lap index no lap can have.
        let samples = self.e_step(u64::MAX, true)?;
        let dir = self.dir.join(INIT_DIR);
        create_dir(&dir)?;
        write_npy(&dir.join(SAMPLES_FILE), &samples)?;
        self.samples = Some(samples);
        self.state.initial_samples_done = true;
        self.commit()
    }

    pub(super) fn m_step(
        &self,
        lap: usize,
        data: &Tensor,
        validation: Option<&Tensor>,
    ) -> Result<MStepOutcome> {
        let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let seed = derive_seed(self.config.seed, SeedPurpose::MStep, lap as u64, 0);
        let vseed = derive_seed(self.config.seed, SeedPurpose::Validation, lap as u64, u64::MAX);
        let mut train = self.config.mstep.clone();
        train.progress = train.progress || self.config.progress;
        m_step_validated(model, data, validation.map(|v| (v, vseed)), &train, seed, lap)
    }

    pub(super) fn run_lap(&mut self, lap: usize) -> Result<()> {
        let start = Instant::now();
        let dir = lap_dir(&self.dir, lap);
        create_dir(&dir)?;
        let bound = self.config.filter_bound;
        let validation_s;
        let (samples, (report, ema, validation), estep_s, mstep_s) = match self.config.order {
            LapOrder::TrainThenSample => {
                let current = self
                    .samples
                    .as_ref()
                    .ok_or_else(|| EmError::config("order", "no initial samples to train on"))?;
                let data = filter_samples(current, bound);
                if data.size()[0] == 0 {
                    return Err(EmError::EmptyTrainingSet { lap, total: current.size()[0] });
                }
                // The training samples came from the current prior (the Gaussian before lap 0).
                let t = Instant::now();
                let val = self.validation_samples(lap as u64, lap == 0)?;
                validation_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let outcome = self.m_step(lap, &data, val.as_ref())?;
                let mstep_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let samples = self.e_step(lap as u64, false)?;
                (samples, outcome, t.elapsed().as_secs_f64(), mstep_s)
            }
            LapOrder::SampleThenTrain => {
                let t = Instant::now();
                let samples = self.e_step(lap as u64, lap == 0)?;
                let estep_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let val = self.validation_samples(lap as u64, lap == 0)?;
                validation_s = t.elapsed().as_secs_f64();
                if let Some(r) = self.config.refit {
                    let s = (r.samples as i64).min(samples.size()[0]);
                    let fit =
                        GaussianPrior::fit_ppca(&samples.narrow(0, 0, s).to_device(self.device), r.rank)?;
                    if let Some(m) = self.model.as_mut() {
                        m.denoiser.set_mean(Some(fit.mean_shaped().to_kind(Kind::Float)));
                    }
                    self.gaussian = Some(fit);
                }
                let data = filter_samples(&samples, bound);
                if data.size()[0] == 0 {
                    return Err(EmError::EmptyTrainingSet { lap, total: samples.size()[0] });
                }
                let t = Instant::now();
                let outcome = self.m_step(lap, &data, val.as_ref())?;
                (samples, outcome, estep_s, t.elapsed().as_secs_f64())
            }
        };
        if self.validation.is_some() {
            let lines: Vec<Value> = validation.iter().map(|r| json!(r)).collect();
            write_jsonl(&dir.join(VALIDATION_FILE), &lines)?;
        }
        let kept = filter_samples(&samples, bound);
        let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let gaussian = self
            .gaussian
            .as_ref()
            .ok_or_else(|| EmError::config("gaussian", "the Gaussian prior is not fitted"))?;
        checkpoint::save(&dir, model, ema.as_ref())?;
        write_npy(&dir.join(SAMPLES_FILE), &samples)?;
        gaussian.save(&dir.join(GAUSSIAN_FILE))?;
        report.write_jsonl(&dir.join(TRAIN_LOG_FILE))?;

        let mut metrics = Map::new();
        let (loss_mean, loss_std) = loss_summary(&report);
        let stats = sample_stats(&kept);
        let total = samples.size()[0];
        let diag = observation_diagnostic(
            &self.observations,
            &samples,
            derive_seed(self.config.seed, SeedPurpose::Diagnostic, lap as u64, 0),
            self.config.diagnostics.sinkhorn_subsample,
        )?;
        let fields = json!({
            "lap": lap,
            "loss_mean": finite(loss_mean),
            "loss_std": finite(loss_std),
            "loss_last": report.records.last().map(|r| r.loss).and_then(finite),
            "estep_seconds": estep_s,
            "mstep_seconds": mstep_s,
            "samples": total,
            "kept": stats.count,
            "kept_fraction": stats.count as f64 / total.max(1) as f64,
            "sample_mean": finite(stats.mean),
            "sample_std": finite(stats.std),
            "obs_mean_rms": finite(diag.mean_rms),
            "obs_std_rms": finite(diag.std_rms),
            "obs_residual_rms": finite(diag.residual_rms),
            "obs_noise_rms": finite(diag.noise_rms),
            "obs_sinkhorn": diag.sinkhorn.and_then(finite),
        });
        if self.validation.is_some() {
            let losses = validation.iter().map(|r| r.loss);
            metrics.insert("val_loss_last".into(), json!(validation.last().map(|r| r.loss).and_then(finite)));
            metrics.insert("val_loss_min".into(), json!(finite(losses.fold(f64::INFINITY, f64::min))));
            metrics.insert("validation_seconds".into(), json!(validation_s));
        }
        if let Value::Object(m) = fields {
            metrics.extend(m);
        }
        {
            let mut ctx = LapContext {
                lap,
                run_dir: &self.dir,
                lap_dir: dir.clone(),
                config: &self.config,
                prior: &model.denoiser,
                model,
                gaussian,
                samples: &samples,
                kept: &kept,
                observations: &self.observations,
                device: self.device,
                metrics: &mut metrics,
            };
            for o in &mut self.observers {
                let name = o.name().to_string();
                o.on_lap(&mut ctx).map_err(|e| match e {
                    EmError::Observer { .. } => e,
                    other => EmError::observer(name, other),
                })?;
            }
        }
        metrics.insert("lap_seconds".into(), json!(start.elapsed().as_secs_f64()));
        let path = self.dir.join(METRICS_FILE);
        let mut lines: Vec<Value> = read_jsonl(&path)?
            .into_iter()
            .filter(|l| l.get("lap").and_then(Value::as_u64).is_some_and(|k| (k as usize) < lap))
            .collect();
        lines.push(Value::Object(metrics));
        write_jsonl(&path, &lines)?;
        self.samples = Some(samples);
        self.state.completed_laps = lap + 1;
        self.commit()
    }
}

/// What one M-step returns: the loss curve, the EMA and the validation losses.
type MStepOutcome = (TrainReport, Option<Ema>, Vec<ValidationRecord>);

/// `Some(x)` for a finite number (JSON has no NaN), else `None` (written as `null`).
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}
