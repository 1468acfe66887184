//! Per-lap hooks: the [`LapObserver`] trait and the [`LapContext`] it receives.

use std::path::{Path, PathBuf};

use diem_models::{Denoiser, PriorModel, VeSchedule};
use diem_operators::Observation;
use diem_sampling::NoiseRng;
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

use crate::config::{EmConfig, SamplerSpec};
use crate::error::Result;
use crate::gaussian::GaussianPrior;
use crate::seed::{derive_seed, SeedPurpose};

/// What an observer sees at the end of a lap, after the lap's files are written and before the lap is
/// committed (its metrics line and `state.bin`). Fields added with [`LapContext::add_metric`] go into the
/// lap's line of `metrics.jsonl`.
pub struct LapContext<'a> {
    /// The lap index (0-based).
    pub lap: usize,
    /// The run directory.
    pub run_dir: &'a Path,
    /// This lap's directory `run_dir/lap-NNN` (observers may write plots there, atomically).
    pub lap_dir: PathBuf,
    /// The run's configuration.
    pub config: &'a EmConfig,
    /// The prior at the end of the lap (the model just trained; its EMA weights when configured). Under
    /// `no_grad` it can be sampled with any [`diem_sampling::Sampler`] or with [`LapContext::sample_prior`].
    pub prior: &'a dyn Denoiser,
    /// The same prior as a [`PriorModel`] (variables, schedule, μ_x).
    pub model: &'a PriorModel,
    /// The current Gaussian `(μ_x, Σ_x)` (the initial fit, or the lap's PPCA refit).
    pub gaussian: &'a GaussianPrior,
    /// The lap's E-step samples, `[k·N, ..x_shape]`, unfiltered; sample `j` belongs to observation `j mod N`.
    /// [`crate::LapOrder::TrainThenSample`]: drawn with the model just trained; `SampleThenTrain`: drawn with
    /// the previous prior, and trained on.
    pub samples: &'a Tensor,
    /// The samples kept by the filter (all of them without a filter).
    pub kept: &'a Tensor,
    /// The observations.
    pub observations: &'a Observation,
    /// The device of the run.
    pub device: Device,
    pub(crate) metrics: &'a mut Map<String, Value>,
}

impl LapContext<'_> {
    /// The model's noise schedule.
    pub fn schedule(&self) -> VeSchedule {
        self.model.schedule()
    }

    /// Adds (or replaces) a field of this lap's metrics line.
    pub fn add_metric(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.metrics.insert(key.into(), value.into());
    }

    /// The metrics recorded so far for this lap.
    pub fn metrics(&self) -> &Map<String, Value> {
        self.metrics
    }

    /// A seed for the observer's own randomness, derived from the run seed, the lap and `index`.
    pub fn seed(&self, index: u64) -> u64 {
        derive_seed(self.config.seed, SeedPurpose::Observer, self.lap as u64, index)
    }

    /// `n` samples of the prior (not the posterior) with `sampler`, starting from `μ_x + σ_max z`, noise from
    /// `NoiseRng::seeded(seed)`; `[n, ..x_shape]` f32 on the run's device.
    ///
    /// # Errors
    /// [`crate::EmError::Sampling`] when the sampler fails.
    pub fn sample_prior(&self, n: i64, sampler: &SamplerSpec, seed: u64) -> Result<Tensor> {
        let s = sampler.build(self.schedule())?;
        let mut shape = vec![n];
        shape.extend(&self.gaussian.x_shape);
        Ok(s.sample(self.prior, &shape, Kind::Float, self.device, &mut NoiseRng::seeded(seed))?)
    }
}

/// Per-lap work added by an experiment (metrics against ground truth, plots). Observers run in the order
/// they were added, on every lap run by this process (a resumed run calls them for the remaining laps only).
/// An error aborts the run before the lap is committed, so the lap is redone on resume.
pub trait LapObserver {
    /// A short name for error messages.
    fn name(&self) -> &str;

    /// Called once when the Gaussian initialization is complete (not again on resume).
    ///
    /// # Errors
    /// Whatever the observer reports.
    fn on_gaussian(&mut self, _run_dir: &Path, _prior: &GaussianPrior) -> Result<()> {
        Ok(())
    }

    /// Called at the end of every lap.
    ///
    /// # Errors
    /// Whatever the observer reports.
    fn on_lap(&mut self, ctx: &mut LapContext<'_>) -> Result<()>;
}
