//! [`EmLoop`]: the DiEM loop in memory (docs/method.md §8, Algorithm 1), without a run directory.
//!
//! An [`EmLoop`] holds the observations, the configuration, the current Gaussian prior, the model and the
//! latest E-step samples. [`EmLoop::init`] fits the Gaussian initial prior (and draws the initial samples of
//! [`crate::LapOrder::TrainThenSample`]); every [`EmLoop::step`] runs one lap and returns its
//! [`LapOutcome`] (samples, loss curve, times). Nothing is written anywhere: persistence is a [`RunStore`]'s
//! business ([`EmLoop::run_with`]); [`crate::EmRun`] is this loop with the run directory as its store.
//!
//! Driven by hand, the loop draws exactly what [`crate::EmRun`] draws for the same configuration and seed
//! (every step derives its seeds with [`crate::derive_seed`]), so its samples and weights equal the run's
//! bit for bit on CPU.
//!
//! ```no_run
//! use diem_em::{EmConfig, EmLoop};
//! use diem_operators::{NoiseCov, Observation, Projection};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let x = tch::Tensor::randn([1024, 5], (tch::Kind::Float, tch::Device::Cpu));
//! let op = Projection::random_sphere(1024, 2, 5, 0)?;
//! let observations = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-2)?, 1)?;
//! let mut em = EmLoop::new(EmConfig::manifold(4), observations, tch::Device::Cpu)?;
//! em.init()?;
//! while em.completed_laps() < em.config().laps {
//!     let lap = em.step()?;
//!     println!("lap {}: loss {:?}, {:.1} s", lap.lap, lap.report.records.last(), lap.seconds());
//! }
//! let prior = em.model().expect("trained");
//! # let _ = prior;
//! # Ok(()) }
//! ```

use std::rc::Rc;
use std::time::Instant;

use diem_dist::{Communicator, Single};
use diem_models::{
    Ema, ModelFactory, PriorModel, ProgressObserver, ProgressTask, TerminalProgress, TrainReport,
};
use diem_operators::Observation;
use diem_sampling::GuidanceStats;
use tch::{Device, Tensor};

use crate::config::{DataStorage, EmConfig, LapOrder};
use crate::dist::{chunk_rows, shard_chunks, sync};
use crate::error::{EmError, Result};
use crate::estep::chunk_count;
use crate::gaussian::GaussianPrior;
use crate::mstep::ValidationRecord;
use crate::store::{Restored, RunStore};

/// How far an [`EmLoop`] has come: the steps of Algorithm 1 it has completed (what a [`RunStore`] commits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopState {
    /// The Gaussian initial prior is fitted.
    pub gaussian_done: bool,
    /// The initial E-step of [`LapOrder::TrainThenSample`] is done.
    pub initial_samples_done: bool,
    /// Laps completed.
    pub completed_laps: usize,
}

/// What one lap of an [`EmLoop`] produced (docs/method.md §8).
#[derive(Debug)]
pub struct LapOutcome {
    /// The lap index (0-based).
    pub lap: usize,
    /// This rank's E-step samples of the lap, unfiltered (every sample with one process); sample `j` belongs
    /// to observation `j mod N`.
    pub samples: Tensor,
    /// Every rank's E-step samples, gathered on rank 0 (`None` on the other ranks).
    pub gathered: Option<Tensor>,
    /// The M-step's loss curve.
    pub report: TrainReport,
    /// The M-step's EMA of the weights, when configured (the model already holds the EMA weights).
    pub ema: Option<Ema>,
    /// The validation losses ([`EmLoop::with_validation`]; empty without a validation set).
    pub validation: Vec<ValidationRecord>,
    /// Seconds of the lap's E-step.
    pub estep_seconds: f64,
    /// Seconds of the lap's M-step.
    pub mstep_seconds: f64,
    /// Seconds of the lap's validation E-step.
    pub validation_seconds: f64,
    /// When the lap started.
    pub started: Instant,
    /// A hash of every rank's parameters after the M-step (one entry per rank; they must agree).
    pub parameter_hashes: Vec<u64>,
    /// The E-step's costs and solver events over every rank.
    pub stats: GuidanceStats,
}

impl LapOutcome {
    /// Seconds since the lap started.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// The DiEM loop in memory (module docs): observations + configuration (+ the network's [`ModelFactory`], the
/// device and the communicator of a data-parallel run).
pub struct EmLoop {
    pub(crate) config: EmConfig,
    pub(crate) observations: Observation,
    pub(crate) device: Device,
    pub(crate) comm: Rc<dyn Communicator>,
    pub(crate) factory: Rc<dyn ModelFactory>,
    pub(crate) progress: Rc<dyn ProgressObserver>,
    /// Whether `progress` was given by the caller (then the M-step reports to it too).
    pub(crate) custom_progress: bool,
    pub(crate) state: LoopState,
    pub(crate) gaussian: Option<GaussianPrior>,
    pub(crate) model: Option<PriorModel>,
    /// This rank's latest E-step samples (unfiltered).
    pub(crate) samples: Option<Tensor>,
    pub(crate) validation: Option<Observation>,
    /// Whether rank 0's parameters went to every rank in this process.
    pub(crate) broadcast_done: bool,
    /// What the checks of the observations found worth saying (see [`EmLoop::warnings`]).
    pub(crate) warnings: Vec<String>,
}

impl std::fmt::Debug for EmLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmLoop").field("state", &self.state).finish_non_exhaustive()
    }
}

impl EmLoop {
    /// A loop over `observations` with the network `config.network` (a built-in one), in one process.
    ///
    /// # Errors
    /// [`EmError::Config`] for an invalid configuration or one that does not fit the observations (the checks
    /// of [`crate::EmRun::check_new`]).
    pub fn new(config: EmConfig, observations: Observation, device: Device) -> Result<Self> {
        let factory: Rc<dyn ModelFactory> = Rc::new(config.network.clone());
        Self::with_model(config, observations, device, factory, Rc::new(Single))
    }

    /// A loop whose network `factory` builds (a user-defined one, or a built-in one), as one rank of a
    /// data-parallel group over `comm` ([`Single`] for one process; see [`crate::dist`]). The factory's
    /// description replaces `config.network`.
    ///
    /// # Errors
    /// As [`EmLoop::new`]; [`EmError::Dist`] when the ranks disagree.
    pub fn with_model(
        mut config: EmConfig,
        observations: Observation,
        device: Device,
        factory: Rc<dyn ModelFactory>,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        config.network = factory.describe();
        let checked = crate::EmRun::check_new(&config, &observations, comm.size());
        let warnings = sync(&*comm, checked)?;
        let mut em = Self::from_parts(config, observations, device, factory, comm, LoopState::default());
        em.warnings = warnings;
        Ok(em)
    }

    /// A loop at `state` (the Gaussian, model and samples are set by the caller), observations moved to
    /// the data's device.
    pub(crate) fn from_parts(
        config: EmConfig,
        observations: Observation,
        device: Device,
        factory: Rc<dyn ModelFactory>,
        comm: Rc<dyn Communicator>,
        state: LoopState,
    ) -> Self {
        let observations = observations.to_device(data_device(&config, device));
        let progress = Rc::new(TerminalProgress::new(config.progress && comm.is_root()));
        Self {
            config,
            observations,
            device,
            comm,
            factory,
            progress,
            custom_progress: false,
            state,
            gaussian: None,
            model: None,
            samples: None,
            validation: None,
            broadcast_done: false,
            warnings: Vec::new(),
        }
    }

    /// Attaches held-out observations: every lap then draws one posterior sample per validation observation
    /// with the prior that drew the lap's training samples, and records the M-step's loss on them with the
    /// EMA weights every `mstep.log_every` steps (docs/method.md §8; [`crate::mstep::m_step_validated`]).
    ///
    /// # Errors
    /// [`EmError::Config`] when the validation latents' shape differs from the training observations'.
    pub fn with_validation(mut self, validation: Observation) -> Result<Self> {
        self.set_validation(validation)?;
        Ok(self)
    }

    pub(crate) fn set_validation(&mut self, validation: Observation) -> Result<()> {
        let (train, val) = (self.observations.operator.x_shape(), validation.operator.x_shape());
        if train != val || validation.is_empty() {
            return Err(EmError::config(
                "validation",
                format!(
                    "needs ≥ 1 observation of latents shaped like the training ones ({train:?}), got {} of \
                     {val:?}",
                    validation.len()
                ),
            ));
        }
        self.validation = Some(validation.to_device(self.observations.y.device()));
        Ok(())
    }

    /// Reports progress (laps, Gaussian EM and E-step chunks, M-step steps) to `observer` instead of the
    /// terminal display `config.progress` asks for.
    pub fn with_progress(mut self, observer: Rc<dyn ProgressObserver>) -> Self {
        self.progress = observer;
        self.custom_progress = true;
        self
    }

    /// Shows progress in the terminal (on rank 0) or not, whatever the configuration says.
    pub fn set_progress(&mut self, progress: bool) {
        self.config.progress = progress;
        self.progress = Rc::new(TerminalProgress::new(progress && self.comm.is_root()));
        self.custom_progress = false;
    }

    /// Warnings about the data found when the loop was made ([`crate::EmRun::check_new`]): for example
    /// observations that carry no information about some coordinates. Empty when nothing was found.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The configuration (`network` is the factory's description).
    pub fn config(&self) -> &EmConfig {
        &self.config
    }

    /// The observations (on the data's device, see [`DataStorage`]).
    pub fn observations(&self) -> &Observation {
        &self.observations
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The communicator the loop's ranks share.
    pub fn communicator(&self) -> &dyn Communicator {
        &*self.comm
    }

    /// The steps completed so far.
    pub fn state(&self) -> LoopState {
        self.state
    }

    /// Laps completed.
    pub fn completed_laps(&self) -> usize {
        self.state.completed_laps
    }

    /// The current Gaussian prior, once fitted (the initial fit, or the last PPCA refit).
    pub fn gaussian(&self) -> Option<&GaussianPrior> {
        self.gaussian.as_ref()
    }

    /// The current model, once created.
    pub fn model(&self) -> Option<&PriorModel> {
        self.model.as_ref()
    }

    /// This rank's latest E-step samples (unfiltered), once drawn.
    pub fn samples(&self) -> Option<&Tensor> {
        self.samples.as_ref()
    }

    /// The Gaussian initialization, if not done (docs/method.md §7.4), then the model (seeded, `μ_x` from the
    /// Gaussian) and, for [`LapOrder::TrainThenSample`], the initial E-step with the Gaussian prior.
    ///
    /// # Errors
    /// Any error of the Gaussian EM or the E-step.
    pub fn init(&mut self) -> Result<&GaussianPrior> {
        if !self.state.gaussian_done {
            let prior = self.compute_gaussian()?;
            self.accept_gaussian(prior);
        }
        self.prepare_model()?;
        if self.config.order == LapOrder::TrainThenSample && !self.state.initial_samples_done {
            let (shard, _) = self.compute_initial_samples()?;
            self.accept_initial_samples(shard);
        }
        self.current_gaussian()
    }

    /// Runs the next lap ([`EmLoop::init`] first when needed) and returns what it produced.
    ///
    /// # Errors
    /// Any error of the E-step or the M-step (for example every sample filtered out).
    pub fn step(&mut self) -> Result<LapOutcome> {
        if !self.state.gaussian_done
            || (self.config.order == LapOrder::TrainThenSample && !self.state.initial_samples_done)
        {
            self.init()?;
        }
        self.prepare_model()?;
        let outcome = self.compute_lap(self.state.completed_laps)?;
        self.accept_lap(&outcome);
        Ok(outcome)
    }

    /// Runs every remaining step up to `laps` laps (≤ `config.laps`), recording each in `store`: after the
    /// Gaussian fit, the initial samples and every lap, rank 0 saves what the step produced and every rank
    /// calls [`RunStore::commit`] with the new state. A store's error stops the loop before the step counts
    /// as done.
    ///
    /// # Errors
    /// Any error of the steps or the store.
    pub fn run_with(&mut self, store: &mut dyn RunStore, laps: usize) -> Result<()> {
        let laps = laps.min(self.config.laps);
        let observer = self.progress.clone();
        let progress = ProgressTask::start(&*observer, "laps", laps as u64);
        progress.advance(self.state.completed_laps as u64);
        if !self.state.gaussian_done {
            progress.message("Gaussian EM");
            let prior = self.compute_gaussian()?;
            let written = if self.comm.is_root() { store.save_gaussian(self, &prior) } else { Ok(()) };
            self.gaussian = Some(prior);
            let next = LoopState { gaussian_done: true, ..self.state };
            store.commit(self, written, next)?;
            self.state = next;
        }
        self.prepare_model()?;
        if self.config.order == LapOrder::TrainThenSample && !self.state.initial_samples_done {
            progress.message("initial E-step");
            let (shard, all) = self.compute_initial_samples()?;
            let written = match &all {
                Some(samples) => store.save_initial_samples(self, samples),
                None => Ok(()),
            };
            let next = LoopState { initial_samples_done: true, ..self.state };
            store.commit(self, written, next)?;
            self.accept_initial_samples(shard);
        }
        while self.state.completed_laps < laps {
            let lap = self.state.completed_laps;
            progress.message(&format!("lap {lap}"));
            let outcome = self.compute_lap(lap)?;
            let written = if self.comm.is_root() { store.save_lap(self, &outcome) } else { Ok(()) };
            let next = LoopState { completed_laps: lap + 1, ..self.state };
            store.commit(self, written, next)?;
            self.accept_lap(&outcome);
            progress.advance(1);
        }
        progress.finish();
        Ok(())
    }

    /// Continues from the last step `store` committed ([`RunStore::load_latest`], agreed by every rank):
    /// returns whether there was one. A loop resumed this way draws what the uninterrupted loop draws.
    ///
    /// # Errors
    /// The store's errors, on every rank.
    pub fn resume_from(&mut self, store: &mut dyn RunStore) -> Result<bool> {
        let loaded = store.load_latest(self);
        match sync(&*self.comm, loaded)? {
            Some(restored) => {
                self.restore(restored);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sets the loop to a committed step: its state, Gaussian, model and samples.
    pub fn restore(&mut self, restored: Restored) {
        let Restored { state, gaussian, model, samples } = restored;
        self.state = state;
        self.gaussian = gaussian;
        self.model = model;
        self.samples = samples;
        self.broadcast_done = false;
    }

    /// Takes a fitted Gaussian as the current prior.
    pub(crate) fn accept_gaussian(&mut self, prior: GaussianPrior) {
        self.gaussian = Some(prior);
        self.state.gaussian_done = true;
    }

    /// Takes this rank's initial samples.
    pub(crate) fn accept_initial_samples(&mut self, shard: Tensor) {
        self.samples = Some(shard);
        self.state.initial_samples_done = true;
    }

    /// Takes a lap's samples and counts it.
    pub(crate) fn accept_lap(&mut self, outcome: &LapOutcome) {
        self.samples = Some(outcome.samples.shallow_clone());
        self.state.completed_laps = outcome.lap + 1;
    }

    /// Creates the model if there is none, and sends rank 0's parameters to every rank once per process.
    pub(crate) fn prepare_model(&mut self) -> Result<()> {
        if self.model.is_none() {
            let model = self.new_model();
            self.model = Some(sync(&*self.comm, model)?);
        }
        if !self.broadcast_done {
            self.broadcast_parameters()?;
            self.broadcast_done = true;
        }
        Ok(())
    }

    /// Rank 0's parameters on every rank, once per process (they then stay identical: the ranks take the
    /// same optimizer steps). Nothing to do for one process.
    fn broadcast_parameters(&mut self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        let model = self.model.as_ref().ok_or_else(|| EmError::config("network", "no model"))?;
        let mut tensors: Vec<Tensor> = model.named_variables().into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| self.comm.broadcast(&mut tensors, 0))?;
        Ok(())
    }
}

/// The rows of the training E-step (k samples per observation, in chunks of the effective chunk size) that
/// rank `rank` of `size` computes.
pub(crate) fn training_rows(
    config: &EmConfig,
    obs: &Observation,
    rank: usize,
    size: usize,
) -> std::ops::Range<i64> {
    let k = config.estep.samples_per_observation;
    let chunk = config.estep.effective_chunk(obs.operator.x_numel());
    let total = obs.len() * k as i64;
    chunk_rows(&shard_chunks(chunk_count(obs.len(), k, chunk), rank, size), chunk, total)
}

/// The device that holds the observations and the samples of a run on `device` (docs/method.md §8; see
/// [`DataStorage`]).
pub(crate) fn data_device(config: &EmConfig, device: Device) -> Device {
    match config.storage {
        DataStorage::Device => device,
        DataStorage::Host => Device::Cpu,
    }
}
