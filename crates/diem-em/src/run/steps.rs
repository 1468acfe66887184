//! The steps of an [`EmLoop`] (and so of an [`crate::EmRun`]): the Gaussian initialization, E-steps
//! (training and validation sets), M-steps and one whole lap (docs/method.md §7.4, §8); then what the run
//! directory ([`RunDir`]) writes of them: files, metrics and observers.
//!
//! On several ranks ([`crate::dist`]) every step is shared: each rank computes its chunks of an E-step and
//! trains on its own shard of the samples with averaged gradients; rank 0 gathers what is written and writes
//! it, runs the observers and commits; every step ends with [`sync`], so a failure anywhere stops all ranks.

use diem_models::{checkpoint, Denoiser, Ema, PriorModel, ProgressTask, TrainReport};
use diem_operators::Observation;
use diem_sampling::GuidanceStats;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tch::{Kind, Tensor};

use super::RunDir;
use crate::config::{EmConfig, GaussianEmConfig, LapOrder};
use crate::diagnostics::{estep_consistency, observation_diagnostic, sample_stats};
use crate::dist::{check_parameters, gather_to_root, local_batch, shard_chunks, sync, DistReducer};
use crate::emloop::{EmLoop, LapOutcome};
use crate::error::{EmError, Result};
use crate::estep::{chunk_count, posterior_shard, EStepPlan, EStepShard};
use crate::gaussian::{cov_x_mmps, fit_gaussian_on, GaussianPrior};
use crate::io::{create_dir, read_jsonl, write_jsonl, write_npy};
use crate::layout::{
    lap_dir, GAUSSIAN_FILE, INIT_DIR, METRICS_FILE, SAMPLES_FILE, TRAIN_LOG_FILE, VALIDATION_FILE,
};
use crate::mstep::{filter_samples, loss_summary, m_step_observed, ValidationRecord};
use crate::observer::LapContext;
use crate::seed::{derive_seed, torch_seed, SeedPurpose};
use diem_sampling::GuidanceConfig;

impl EmLoop {
    /// Fits the Gaussian initial prior (docs/method.md §7.4), as a resume reads it back ([`as_stored`]).
    pub(crate) fn compute_gaussian(&self) -> Result<GaussianPrior> {
        let g = &self.config.gaussian;
        let indices = g.pair_indices(self.observations.len());
        let chunks = chunk_count(indices.len() as i64, 1, g.chunk_size as i64);
        let mine = shard_chunks(chunks, self.comm.rank(), self.comm.size());
        let total = (mine.end - mine.start) * g.iterations as u64;
        let bar = ProgressTask::start(&*self.progress, "Gaussian EM chunks", total);
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
        let prior = fit_gaussian_on(
            &*self.comm,
            pairs,
            g,
            self.config.schedule(),
            self.config.seed,
            Some(&*bar),
            &mut |_, _| Ok(()),
        )?;
        bar.finish();
        as_stored(&prior)
    }

    /// The model, freshly initialized from its seed, with `μ_x` from the Gaussian prior.
    pub(crate) fn new_model(&self) -> Result<PriorModel> {
        let _rng = crate::mstep::TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(torch_seed(derive_seed(self.config.seed, SeedPurpose::Init, 0, 0)));
        let mut model = PriorModel::from_factory(&*self.factory, self.config.schedule(), self.device)?;
        let g = self
            .gaussian
            .as_ref()
            .ok_or_else(|| EmError::config("gaussian", "the Gaussian prior must be fitted first"))?;
        model.set_mean(Some(g.mean_shaped().to_kind(Kind::Float).to_device(self.device)));
        Ok(model)
    }

    pub(crate) fn current_gaussian(&self) -> Result<&GaussianPrior> {
        self.gaussian.as_ref().ok_or_else(|| EmError::config("gaussian", "the Gaussian prior is not fitted"))
    }

    /// This rank's shard of the E-step under the Gaussian prior (exact `cov_x` MMPS) or the model (configured
    /// posterior); every rank's outcome agreed.
    pub(crate) fn e_step(&self, lap: u64, purpose_lap_gaussian: bool) -> Result<EStepShard> {
        let k = self.config.estep.samples_per_observation;
        let local = self.e_step_on(&self.observations, k, lap, purpose_lap_gaussian, SeedPurpose::EStepChunk);
        sync(&*self.comm, local)
    }

    /// The lap's validation posterior samples (one per validation observation), drawn like [`Self::e_step`]'s
    /// with their own seeds and gathered on rank 0 (`None` elsewhere, and without a validation set).
    pub(crate) fn validation_samples(&self, lap: u64, purpose_lap_gaussian: bool) -> Result<Option<Tensor>> {
        let Some(v) = &self.validation else { return Ok(None) };
        let local = self.e_step_on(v, 1, lap, purpose_lap_gaussian, SeedPurpose::Validation);
        let shard = sync(&*self.comm, local)?;
        gather_to_root(&*self.comm, &shard.samples)
    }

    /// This rank's chunks of `k` posterior samples per observation of `obs` (see [`Self::e_step`]), chunk
    /// seeds from `purpose`.
    pub(crate) fn e_step_on(
        &self,
        obs: &Observation,
        k: usize,
        lap: u64,
        purpose_lap_gaussian: bool,
        purpose: SeedPurpose,
    ) -> Result<EStepShard> {
        let e = &self.config.estep;
        let gaussian = self.current_gaussian()?;
        let sampler = e.sampler.build(self.config.schedule())?;
        let x_numel = gaussian.dim();
        let chunk = e.effective_chunk(x_numel);
        let mine = shard_chunks(chunk_count(obs.len(), k, chunk), self.comm.rank(), self.comm.size());
        let when = if lap == u64::MAX { "initial".to_string() } else { format!("lap {lap}:") };
        let what =
            if purpose == SeedPurpose::Validation { "validation E-step chunks" } else { "E-step chunks" };
        let bar = ProgressTask::start(&*self.progress, &format!("{when} {what}"), mine.end - mine.start);
        let gaussian_f32 = GaussianPrior {
            mean: gaussian.mean.to_kind(Kind::Float),
            cov: gaussian.cov.to_kind(Kind::Float),
            x_shape: gaussian.x_shape.clone(),
        };
        let plan = |guidance: GuidanceConfig| {
            EStepPlan::new(guidance, k)
                .chunk(chunk)
                .seeded(self.config.seed, purpose, lap)
                .device(Some(self.device))
        };
        let shard = if purpose_lap_gaussian {
            let denoiser = gaussian_f32.denoiser()?;
            let mmps = cov_x_mmps(&gaussian_f32, &self.config.gaussian_estep_solver());
            posterior_shard(&denoiser, obs, sampler.as_ref(), &plan(mmps.into()), mine, Some(&*bar))?
        } else {
            let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
            let guidance = e.posterior.resolve(Some(&gaussian_f32.cov))?;
            let prior: &dyn Denoiser = model.denoiser();
            posterior_shard(prior, obs, sampler.as_ref(), &plan(guidance), mine, Some(&*bar))?
        };
        bar.finish();
        Ok(shard)
    }

    /// The initial E-step of [`LapOrder::TrainThenSample`] with the Gaussian prior: this rank's samples, and
    /// every rank's on rank 0, checked finite.
    pub(crate) fn compute_initial_samples(&self) -> Result<(Tensor, Option<Tensor>)> {
        // π_0's chunks use a lap index no lap can have.
        let shard = self.e_step(u64::MAX, true)?;
        let all = gather_to_root(&*self.comm, &shard.samples)?;
        let checked = match &all {
            Some(samples) => {
                self.check_finite("the initial E-step (Gaussian prior, exact cov_x MMPS)", samples)
            }
            None => Ok(()),
        };
        sync(&*self.comm, checked)?;
        Ok((shard.samples, all))
    }

    /// This rank's part of a data-parallel M-step on its shard `data` (filtered, non-empty on every rank),
    /// with the validation samples on rank 0; every rank's outcome agreed.
    pub(crate) fn m_step(
        &self,
        lap: usize,
        data: &Tensor,
        validation: Option<&Tensor>,
    ) -> Result<MStepOutcome> {
        let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let (rank, size) = (self.comm.rank(), self.comm.size());
        // Rank 0 draws with the seed a single process uses; the other ranks with their own.
        let seed = derive_seed(self.config.seed, SeedPurpose::MStep, lap as u64, rank as u64);
        let vseed = derive_seed(self.config.seed, SeedPurpose::Validation, lap as u64, u64::MAX);
        let mut train = self.config.mstep.clone();
        train.progress = (train.progress || self.config.progress) && self.comm.is_root();
        let progress = self.custom_progress.then(|| self.progress.clone());
        let parallel = (size > 1).then(|| {
            let b = local_batch(train.batch_size, rank, size);
            let reducer: Box<dyn diem_models::GradientReducer> =
                Box::new(DistReducer::new(self.comm.clone(), b, train.batch_size));
            (reducer, b)
        });
        let outcome = m_step_observed(
            model,
            data,
            validation.map(|v| (v, vseed)),
            &train,
            seed,
            lap,
            parallel,
            progress,
        );
        let (mut report, ema, records) = sync(&*self.comm, outcome)?;
        if size > 1 {
            // Each rank logged its own losses; the curve is their mean (the gradient norms, taken after the
            // averaging, are the same everywhere).
            let mine: Vec<f64> = report.records.iter().map(|r| r.loss).collect();
            let all = self.comm.all_gather_f64(&mine)?;
            for (i, r) in report.records.iter_mut().enumerate() {
                r.loss = all.iter().filter_map(|v| v.get(i)).sum::<f64>() / all.len() as f64;
            }
        }
        Ok((report, ema, records))
    }

    /// Checks that this rank's shard `data` (filtered) can be trained on, on every rank.
    fn check_training_set(&self, lap: usize, data: &Tensor, before_filter: &Tensor) -> Result<()> {
        let local = if data.size()[0] == 0 {
            Err(EmError::EmptyTrainingSet { lap, total: before_filter.size()[0] })
        } else {
            Ok(())
        };
        sync(&*self.comm, local)
    }

    /// One lap (docs/method.md §8, Algorithm 1) in memory, in the configured order; the state does not
    /// advance ([`EmLoop::accept_lap`] does).
    pub(crate) fn compute_lap(&mut self, lap: usize) -> Result<LapOutcome> {
        let start = Instant::now();
        let bound = self.config.filter_bound;
        let validation_s;
        // `shard`: this rank's E-step samples; `all`: every rank's, on rank 0.
        let (shard, all, (report, ema, validation), estep_s, mstep_s) = match self.config.order {
            LapOrder::TrainThenSample => {
                let current = self
                    .samples
                    .as_ref()
                    .ok_or_else(|| EmError::config("order", "no initial samples to train on"))?;
                let data = filter_samples(current, bound);
                self.check_training_set(lap, &data, current)?;
                // The training samples came from the current prior (the Gaussian before lap 0).
                let t = Instant::now();
                let val = self.validation_samples(lap as u64, lap == 0)?;
                validation_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let outcome = self.m_step(lap, &data, val.as_ref())?;
                let mstep_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let shard = self.e_step(lap as u64, false)?;
                let all = gather_to_root(&*self.comm, &shard.samples)?;
                self.agreed_finite(lap, false, &all)?;
                (shard, all, outcome, t.elapsed().as_secs_f64(), mstep_s)
            }
            LapOrder::SampleThenTrain => {
                let t = Instant::now();
                let shard = self.e_step(lap as u64, lap == 0)?;
                let all = gather_to_root(&*self.comm, &shard.samples)?;
                self.agreed_finite(lap, lap == 0, &all)?;
                let estep_s = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let val = self.validation_samples(lap as u64, lap == 0)?;
                validation_s = t.elapsed().as_secs_f64();
                if let Some(r) = self.config.refit {
                    let fit = match &all {
                        Some(samples) => {
                            let s = (r.samples as i64).min(samples.size()[0]);
                            let local = GaussianPrior::fit_ppca(
                                &samples.narrow(0, 0, s).to_device(self.device),
                                r.rank,
                            );
                            Some(sync(&*self.comm, local)?)
                        }
                        None => {
                            sync(&*self.comm, Ok(()))?;
                            None
                        }
                    };
                    let x_shape = self.current_gaussian()?.x_shape.clone();
                    let fit = GaussianPrior::broadcast_from_root(&*self.comm, fit, &x_shape, self.device)?;
                    let fit = as_stored(&fit)?;
                    if let Some(m) = self.model.as_mut() {
                        m.set_mean(Some(fit.mean_shaped().to_kind(Kind::Float)));
                    }
                    self.gaussian = Some(fit);
                }
                let data = filter_samples(&shard.samples, bound);
                self.check_training_set(lap, &data, &shard.samples)?;
                let t = Instant::now();
                let outcome = self.m_step(lap, &data, val.as_ref())?;
                (shard, all, outcome, estep_s, t.elapsed().as_secs_f64())
            }
        };
        let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let hashes = check_parameters(&*self.comm, model.var_store(), lap)?;
        let stats = self.total_stats(&shard.stats)?;
        Ok(LapOutcome {
            lap,
            samples: shard.samples,
            gathered: all,
            report,
            ema,
            validation,
            estep_seconds: estep_s,
            mstep_seconds: mstep_s,
            validation_seconds: validation_s,
            started: start,
            parameter_hashes: hashes,
            stats,
        })
    }

    /// Refuses non-finite E-step samples: a posterior sampler that returns NaN or ±∞ has broken down (a
    /// diverged sample that stays finite is the filter's business), and neither training on the rest nor
    /// writing them would say so.
    fn check_finite(&self, what: &str, samples: &Tensor) -> Result<()> {
        match EmError::non_finite(format!("{what}: the posterior samples"), samples) {
            Some(EmError::NonFinite { what, rows, total }) => {
                let n = self.observations.len();
                let obs: Vec<i64> = rows.iter().map(|r| r % n.max(1)).collect();
                Err(EmError::NonFinite {
                    what: format!(
                        "{what} (sample j belongs to observation j mod {n}: observations {:?}{})",
                        &obs[..obs.len().min(8)],
                        if obs.len() > 8 { ", …" } else { "" }
                    ),
                    rows,
                    total,
                })
            }
            Some(other) => Err(other),
            None => Ok(()),
        }
    }

    /// [`Self::check_finite`] of lap `lap`'s gathered E-step samples (on rank 0), agreed by every rank,
    /// before anything uses them (the refit, the M-step, the files).
    fn agreed_finite(&self, lap: usize, gaussian: bool, all: &Option<Tensor>) -> Result<()> {
        let checked = match all {
            Some(samples) => {
                let prior = if gaussian {
                    "the Gaussian prior, exact cov_x MMPS".to_string()
                } else {
                    format!("the model, {}", self.estep_description())
                };
                self.check_finite(&format!("lap {lap}'s E-step ({prior})"), samples)
            }
            None => Ok(()),
        };
        sync(&*self.comm, checked)
    }

    /// The E-step's method in words, for messages.
    fn estep_description(&self) -> String {
        self.config.estep.describe()
    }

    /// The E-step's costs and solver events summed over the ranks.
    fn total_stats(&self, mine: &GuidanceStats) -> Result<GuidanceStats> {
        if self.comm.size() == 1 {
            return Ok(*mine);
        }
        // Every field, so that a new counter cannot be forgotten here.
        let GuidanceStats { calls, forwards, vjps, solver_applications, fallbacks, damped } = *mine;
        let values = [calls, forwards, vjps, solver_applications, fallbacks, damped].map(|v| v as f64);
        let all = self.comm.all_gather_f64(&values)?;
        let sum = |i: usize| all.iter().filter_map(|v| v.get(i)).sum::<f64>() as usize;
        Ok(GuidanceStats {
            calls: sum(0),
            forwards: sum(1),
            vjps: sum(2),
            solver_applications: sum(3),
            fallbacks: sum(4),
            damped: sum(5),
        })
    }
}

impl RunDir {
    /// Rank 0's part of the Gaussian initialization: `gaussian.safetensors` and the observers.
    pub(super) fn write_gaussian(&mut self, prior: &GaussianPrior) -> Result<()> {
        prior.save(&self.dir.join(GAUSSIAN_FILE))?;
        for o in &mut self.observers {
            o.on_gaussian(&self.dir, prior)?;
        }
        Ok(())
    }

    /// Rank 0's part of the initial E-step: `init/samples.npy`.
    pub(super) fn write_initial_samples(&self, samples: &Tensor) -> Result<()> {
        let dir = self.dir.join(INIT_DIR);
        create_dir(&dir).and_then(|()| write_npy(&dir.join(SAMPLES_FILE), samples))
    }

    /// The magnitude beyond which an E-step sample is implausible ([`crate::DiagnosticsConfig::sample_bound`]):
    /// as configured, else the largest `|μ_i| + 10 · 4 σ_i` of `gaussian` (ten times a ±2σ range).
    fn sample_bound(config: &EmConfig, gaussian: &GaussianPrior) -> f64 {
        config.diagnostics.sample_bound.unwrap_or_else(|| {
            let sd = gaussian.cov.diag().to_kind(Kind::Double).clamp_min(0.0).sqrt();
            let extent = gaussian.mean.to_kind(Kind::Double).abs() + sd * 40.0;
            extent.max().double_value(&[])
        })
    }

    /// Rank 0's part of a lap: the lap's files, its metrics line and the observers (the commit follows).
    pub(super) fn write_lap(&mut self, em: &EmLoop, outcome: &LapOutcome) -> Result<()> {
        let LapOutcome { lap, report, ema, validation, parameter_hashes: hashes, .. } = outcome;
        let (lap, ema, hashes) = (*lap, ema.as_ref(), hashes.as_slice());
        let samples = outcome.gathered.as_ref().ok_or_else(|| {
            EmError::config("samples", "a lap is written on rank 0, with every rank's samples")
        })?;
        let (estep_s, mstep_s, validation_s, start) =
            (outcome.estep_seconds, outcome.mstep_seconds, outcome.validation_seconds, outcome.started);
        let dir = &lap_dir(&self.dir, lap);
        create_dir(dir)?;
        let config = &em.config;
        let bound = config.filter_bound;
        if em.validation.is_some() {
            let lines: Vec<Value> = validation.iter().map(|r| json!(r)).collect();
            write_jsonl(&dir.join(VALIDATION_FILE), &lines)?;
        }
        let kept = filter_samples(samples, bound);
        let model = em.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let gaussian = em.current_gaussian()?;
        checkpoint::save(dir, model, ema)?;
        write_npy(&dir.join(SAMPLES_FILE), samples)?;
        gaussian.save(&dir.join(GAUSSIAN_FILE))?;
        report.write_jsonl(&dir.join(TRAIN_LOG_FILE))?;

        let mut metrics = Map::new();
        let (loss_mean, loss_std) = loss_summary(report);
        let stats = sample_stats(&kept);
        let total = samples.size()[0];
        let diag = observation_diagnostic(
            &em.observations,
            samples,
            derive_seed(config.seed, SeedPurpose::Diagnostic, lap as u64, 0),
            config.diagnostics.sinkhorn_subsample,
        )?;
        let consistency = estep_consistency(&em.observations, samples, Self::sample_bound(config, gaussian))?;
        if let Some(w) = consistency.warning() {
            eprintln!("diem: warning: lap {lap}: {w}");
        }
        metrics.extend(consistency.to_json());
        metrics.insert("estep_fallbacks".into(), json!(outcome.stats.fallbacks));
        metrics.insert("estep_damped".into(), json!(outcome.stats.damped));
        metrics.insert("estep_vjps".into(), json!(outcome.stats.vjps));
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
            "ranks": em.comm.size(),
        });
        if em.validation.is_some() {
            let losses = validation.iter().map(|r| r.loss);
            metrics.insert("val_loss_last".into(), json!(validation.last().map(|r| r.loss).and_then(finite)));
            metrics.insert("val_loss_min".into(), json!(finite(losses.fold(f64::INFINITY, f64::min))));
            metrics.insert("validation_seconds".into(), json!(validation_s));
        }
        if hashes.len() > 1 {
            let hex: Vec<String> = hashes.iter().map(|h| format!("{h:016x}")).collect();
            metrics.insert("param_hashes".into(), json!(hex));
        }
        if !self.pending_changes.is_empty() {
            // What the resume that led to this lap changed in config.json (resumable fields only).
            let changes: Vec<Value> = self
                .pending_changes
                .iter()
                .map(|c| json!({ "field": c.field, "from": c.from, "to": c.to }))
                .collect();
            metrics.insert("config_changes".into(), Value::Array(changes));
        }
        if let Value::Object(m) = fields {
            metrics.extend(m);
        }
        {
            let mut ctx = LapContext {
                lap,
                run_dir: &self.dir,
                lap_dir: dir.to_path_buf(),
                config,
                prior: model.denoiser(),
                model,
                gaussian,
                samples,
                kept: &kept,
                observations: &em.observations,
                device: em.device,
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
        write_jsonl(&path, &lines)
    }
}

/// The Gaussian exactly as a resume reads it back from `gaussian.safetensors`: the same serialization and
/// parsing in memory, so the uninterrupted run continues with the very tensors (values, dtype, layout) a
/// resumed one loads. (PPCA returns `v` as a transposed view of `u`; the file holds it contiguous, and
/// matrix products may round differently on the two layouts.)
fn as_stored(g: &GaussianPrior) -> Result<GaussianPrior> {
    let path = std::path::Path::new(GAUSSIAN_FILE);
    let mut named =
        vec![("mean".to_string(), g.mean.shallow_clone()), ("d".to_string(), g.cov.d().shallow_clone())];
    if let (Some(u), Some(v)) = (g.cov.u(), g.cov.v()) {
        named.push(("u".to_string(), u.shallow_clone()));
        named.push(("v".to_string(), v.shallow_clone()));
    }
    let device = g.mean.device();
    let bytes = checkpoint::tensors_to_safetensors(path, &named)?;
    let mut t = checkpoint::safetensors_from_bytes(path, &bytes, device)?;
    let mut take = |name: &str| t.remove(name).ok_or_else(|| EmError::file(path, format!("`{name}` lost")));
    let (mean, d) = (take("mean")?, take("d")?);
    let (u, v) = match (take("u"), take("v")) {
        (Ok(u), Ok(v)) => (Some(u), Some(v)),
        _ => (None, None),
    };
    Ok(GaussianPrior { mean, cov: diem_linalg::Dplr::new(d, u, v)?, x_shape: g.x_shape.clone() })
}

/// What one M-step returns: the loss curve, the EMA and the validation losses.
type MStepOutcome = (TrainReport, Option<Ema>, Vec<ValidationRecord>);

/// `Some(x)` for a finite number (JSON has no NaN), else `None` (written as `null`).
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}
