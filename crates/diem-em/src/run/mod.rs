//! [`EmRun`]: the DiEM driver (docs/method.md §8, Algorithm 1) with a run directory, observers and resume:
//! an [`EmLoop`] whose [`RunStore`] is the run directory ([`RunDir`]).

mod checks;
mod steps;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use diem_dist::{Communicator, Single};
use diem_models::{checkpoint, ModelFactory, PriorModel, ProgressObserver};
use diem_operators::Observation;
use serde_json::Value;
use tch::{Device, Tensor};

use crate::config::{config_changes, ConfigChange, EmConfig};
use crate::dist::sync;
use crate::emloop::{data_device, training_rows, EmLoop, LapOutcome, LoopState};
use crate::error::{EmError, Result};
use crate::gaussian::GaussianPrior;
use crate::io::{
    create_dir, read_jsonl, read_npy, remove_stale_temp_files, write_json, ObservationFingerprint, RunState,
    STATE_VERSION,
};
use crate::layout::{
    check_new_run_dir, is_run_dir, lap_dir, CONFIG_FILE, GAUSSIAN_FILE, INIT_DIR, METRICS_FILE, SAMPLES_FILE,
    STATE_FILE,
};
use crate::observer::LapObserver;
use crate::store::{Restored, RunStore};
use checks::check_same_inputs;
pub(crate) use checks::{check_data, check_fits, check_shardable};

/// What [`EmRun::run`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Laps completed (the configured number, after a successful run).
    pub completed_laps: usize,
    /// Every line of `metrics.jsonl`.
    pub metrics: Vec<Value>,
}

/// A DiEM run in a run directory (layout in [`crate::layout`]).
///
/// ```no_run
/// # use diem_em::{EmConfig, EmRun};
/// # fn main() -> diem_em::Result<()> {
/// use diem_operators::{NoiseCov, Observation, Projection};
/// // 1,024 points in R^5, each seen through its own random 2×5 projection with noise 1e-2.
/// let x = tch::Tensor::randn([1024, 5], (tch::Kind::Float, tch::Device::Cpu));
/// let op = Projection::random_sphere(1024, 2, 5, 0)?;
/// let observations = Observation::simulate(&x, Box::new(op), NoiseCov::isotropic(1e-2)?, 1)?;
/// let mut run = EmRun::create("runs/x", EmConfig::manifold(32), observations, tch::Device::Cpu)?;
/// let summary = run.run()?;
/// println!("{} laps", summary.completed_laps);
/// # Ok(()) }
/// ```
pub struct EmRun {
    em: EmLoop,
    store: RunDir,
    warnings: Vec<String>,
}

/// The run directory as a [`RunStore`]: the files of every step, the observers, and `state.bin` as the
/// commit point (layout in [`crate::layout`]).
pub struct RunDir {
    dir: PathBuf,
    /// `config.json` as read or written (without [`EmRun::set_progress`]): what a lap commit records.
    stored_config: EmConfig,
    /// Resumable changes of `config.json` not yet recorded in `metrics.jsonl` (see [`crate::config::RESUMABLE`]).
    pending_changes: Vec<ConfigChange>,
    /// `Some(whether the directory existed before)` when this process created the run: a failure before
    /// its first commit then removes what the creation wrote.
    created: Option<bool>,
    /// The committed state (`state.bin`).
    state: RunState,
    observers: Vec<Box<dyn LapObserver>>,
    comm: Rc<dyn Communicator>,
}

impl std::fmt::Debug for RunDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunDir")
            .field("dir", &self.dir)
            .field("state", &self.state)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EmRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmRun").field("store", &self.store).finish_non_exhaustive()
    }
}

impl EmRun {
    /// Starts a new run in `dir` (created if needed): validates `config` against the observations (every
    /// check that needs no computation: the fields, the network against the latent shape, the Gaussian and
    /// refit ranks against the data, the batch against the samples, observations that carry information),
    /// then writes a fresh `state.bin` (which carries the configuration) and `config.json`. Nothing is
    /// written when a check fails, and a failure before the first step is committed removes what was
    /// written, so there is never a half-created run. Nothing is computed until [`EmRun::run`].
    ///
    /// # Errors
    /// [`EmError::RunDir`] when `dir` already holds a run (use [`EmRun::resume`]) or any file a run writes
    /// ([`crate::layout::check_new_run_dir`]); [`EmError::Config`] for an invalid configuration or one that
    /// does not fit the observations; [`EmError::Io`] naming the file that could not be written.
    pub fn create(
        dir: impl AsRef<Path>,
        config: EmConfig,
        observations: Observation,
        device: Device,
    ) -> Result<Self> {
        Self::create_with(dir, config, observations, device, Rc::new(Single))
    }

    /// [`EmRun::create`] as one rank of a data-parallel run over `comm` (every rank calls it with the same
    /// arguments; see [`crate::dist`]). The ranks check that they run the same build on the same
    /// configuration and observations; rank 0 writes the files. A failure on any rank is every rank's error.
    ///
    /// # Errors
    /// As [`EmRun::create`]; [`EmError::Config`] when the E-step has fewer chunks, or the M-step's batch fewer
    /// samples, than there are ranks; [`EmError::Dist`] when the ranks disagree or another rank failed.
    pub fn create_with(
        dir: impl AsRef<Path>,
        config: EmConfig,
        observations: Observation,
        device: Device,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        let factory: Rc<dyn ModelFactory> = Rc::new(config.network.clone());
        Self::create_with_model(dir, config, observations, device, factory, comm)
    }

    /// [`EmRun::create_with`] for the network `factory` builds (a user-defined one, or a built-in one): the
    /// model seam. The factory's description ([`ModelFactory::describe`]) replaces `config.network` and is
    /// what `config.json` and the checkpoints record; resume with [`EmRun::resume_with_model`] and the same
    /// factory.
    ///
    /// # Errors
    /// As [`EmRun::create_with`].
    pub fn create_with_model(
        dir: impl AsRef<Path>,
        mut config: EmConfig,
        observations: Observation,
        device: Device,
        factory: Rc<dyn ModelFactory>,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        config.network = factory.describe();
        let dir = dir.as_ref().to_path_buf();
        let existed = dir.exists();
        let checked = (|| {
            check_new_run_dir(&dir)?;
            let warnings = Self::check_new(&config, &observations, comm.size())?;
            let text =
                serde_json::to_string(&config).map_err(|e| EmError::config("config", e.to_string()))?;
            Ok((ObservationFingerprint::of(&observations)?, text, warnings))
        })();
        let (fingerprint, text, warnings) = sync(&*comm, checked)?;
        check_same_inputs(&*comm, &config, &observations)?;
        let state = RunState {
            version: STATE_VERSION,
            seed: config.seed,
            gaussian_done: false,
            initial_samples_done: false,
            completed_laps: 0,
            observations: fingerprint,
            config: text,
        };
        // state.bin first: it carries the configuration, so a kill between the two files leaves a run that
        // resumes (restoring config.json) rather than a config.json that blocks the directory.
        let written = if comm.is_root() {
            create_dir(&dir)
                .and_then(|()| remove_stale_temp_files(&dir).map(|_| ()))
                .and_then(|()| state.save(&dir.join(STATE_FILE)))
                .and_then(|()| write_json(&dir.join(CONFIG_FILE), &config))
        } else {
            Ok(())
        };
        sync(&*comm, written)?;
        let store = RunDir {
            dir,
            stored_config: config.clone(),
            pending_changes: Vec::new(),
            created: Some(existed),
            state,
            observers: Vec::new(),
            comm: comm.clone(),
        };
        let em = EmLoop::from_parts(config, observations, device, factory, comm, LoopState::default());
        Ok(Self { em, store, warnings })
    }

    /// Every check [`EmRun::create_with`] makes of a configuration against the observations before it
    /// writes anything (for `ranks` ranks): the fields, the network against the latent shape, the Gaussian
    /// and refit ranks against the data, the batch against the samples, observations that carry
    /// information. Returns the warnings. A caller that must do something irreversible before creating a
    /// run (`diem fit --overwrite` deletes the old one) checks first with this.
    ///
    /// # Errors
    /// [`EmError::Config`] naming the field.
    pub fn check_new(config: &EmConfig, observations: &Observation, ranks: usize) -> Result<Vec<String>> {
        config.validate()?;
        check_fits(config, observations)?;
        let warnings = check_data(config, observations)?;
        check_shardable(config, observations, ranks)?;
        Ok(warnings)
    }

    /// Reopens the run in `dir` after its last committed step: reads `config.json` and `state.bin`, checks
    /// that `observations` are the ones the run was created with (every array's hash), that `config.json`
    /// differs from the configuration of the committed steps only in fields a resume may change
    /// ([`crate::config::RESUMABLE`]: laps, the progress display, the diagnostics, the data's storage), and
    /// loads the Gaussian prior, the last lap's model and samples. It removes the temporary files a kill
    /// left behind, and restores a `config.json` that a kill during creation left unwritten. [`EmRun::run`]
    /// then continues with the next step; the result equals the uninterrupted run's (bit-exact on CPU, see
    /// [`crate::derive_seed`]). The changes are recorded as `config_changes` in the next lap's line of
    /// `metrics.jsonl`.
    ///
    /// The observations are passed again rather than copied into the run directory (data sets can be large).
    ///
    /// # Errors
    /// [`EmError::RunDir`] when `dir` holds no run or the observations differ (naming the arrays that
    /// differ); [`EmError::ConfigChanged`] naming the fields of `config.json` that may not change; file
    /// errors naming the file.
    pub fn resume(dir: impl AsRef<Path>, observations: Observation, device: Device) -> Result<Self> {
        Self::resume_with(dir, observations, device, Rc::new(Single))
    }

    /// [`EmRun::resume`] as one rank of a data-parallel run over `comm`, with the same or a different number
    /// of ranks than the run had before: every rank reads the run directory (a file system all ranks share)
    /// and keeps its own shard of the last samples.
    ///
    /// # Errors
    /// As [`EmRun::resume`] and [`EmRun::create_with`].
    pub fn resume_with(
        dir: impl AsRef<Path>,
        observations: Observation,
        device: Device,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        Self::resume_inner(dir.as_ref(), observations, device, None, comm)
    }

    /// [`EmRun::resume_with`] of a run created by [`EmRun::create_with_model`]: `factory` must describe
    /// itself as the run's `config.json` records (`network`).
    ///
    /// # Errors
    /// As [`EmRun::resume_with`]; [`EmError::Config`] naming `network` when the factory builds another
    /// network.
    pub fn resume_with_model(
        dir: impl AsRef<Path>,
        observations: Observation,
        device: Device,
        factory: Rc<dyn ModelFactory>,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        Self::resume_inner(dir.as_ref(), observations, device, Some(factory), comm)
    }

    fn resume_inner(
        dir: &Path,
        observations: Observation,
        device: Device,
        factory: Option<Rc<dyn ModelFactory>>,
        comm: Rc<dyn Communicator>,
    ) -> Result<Self> {
        let dir = dir.to_path_buf();
        let loaded = Self::load_run(&dir, &observations, factory, &*comm);
        let Loaded { config, state, changes, warnings, factory } = sync(&*comm, loaded)?;
        check_same_inputs(&*comm, &config, &observations)?;
        let mut store = RunDir {
            dir,
            stored_config: config.clone(),
            pending_changes: changes,
            created: None,
            state,
            observers: Vec::new(),
            comm: comm.clone(),
        };
        let mut em = EmLoop::from_parts(config, observations, device, factory, comm, LoopState::default());
        em.resume_from(&mut store)?;
        Ok(Self { em, store, warnings })
    }

    /// What [`EmRun::resume_with`] reads first, on one rank: the configuration and the state, checked
    /// against the observations and the factory (the Gaussian, the model and the samples follow through
    /// [`RunStore::load_latest`]). Rank 0 also removes stale temporary files and restores a missing
    /// `config.json`.
    fn load_run(
        dir: &Path,
        observations: &Observation,
        factory: Option<Rc<dyn ModelFactory>>,
        comm: &dyn Communicator,
    ) -> Result<Loaded> {
        if !is_run_dir(dir) {
            let reason = if !dir.exists() {
                "does not exist".to_string()
            } else if dir.join(CONFIG_FILE).exists() {
                "holds no committed run (no state.bin): it was killed while being created, or state.bin was \
                 deleted; start a new run (with --overwrite to delete this one)"
                    .to_string()
            } else {
                "holds no run (no state.bin)".to_string()
            };
            return Err(EmError::RunDir { path: dir.into(), reason });
        }
        let state = RunState::load(&dir.join(STATE_FILE))?;
        let state_path = dir.join(STATE_FILE);
        let committed = if state.config.is_empty() {
            None
        } else {
            Some(EmConfig::from_json(&state_path, state.config.as_bytes())?)
        };
        let config_path = dir.join(CONFIG_FILE);
        let config = match (&committed, config_path.exists()) {
            (Some(c), false) => {
                // A kill between state.bin and config.json of a new run: config.json is restored.
                if comm.is_root() {
                    write_json(&config_path, c)?;
                }
                c.clone()
            }
            _ => EmConfig::from_file(&config_path)?,
        };
        if comm.is_root() {
            remove_stale_temp_files(dir)?;
        }
        let changes = match &committed {
            Some(c) => config_changes(c, &config)?,
            None => Vec::new(),
        };
        let refused: Vec<&ConfigChange> = changes.iter().filter(|c| !c.resumable()).collect();
        if !refused.is_empty() {
            let list: Vec<String> = refused.iter().map(|c| c.to_string()).collect();
            return Err(EmError::ConfigChanged {
                path: config_path,
                fields: refused.iter().map(|c| c.field.clone()).collect(),
                reason: format!(
                    "changed since the run's last commit: {}. A resume cannot apply these (they shape every \
                     lap's samples and weights, so the run would mix two configurations); only {} may \
                     change. Restore the old values, or start a new run with the new configuration",
                    list.join("; "),
                    crate::config::RESUMABLE.join(", ")
                ),
            });
        }
        if state.seed != config.seed {
            return Err(EmError::RunDir {
                path: dir.into(),
                reason: format!(
                    "config.json seed {} differs from state.bin seed {}",
                    config.seed, state.seed
                ),
            });
        }
        let differences = state.observations.differences(observations)?;
        if !differences.is_empty() {
            return Err(EmError::RunDir {
                path: dir.into(),
                reason: format!(
                    "the observations differ from the ones the run was created with: {}",
                    differences.join("; ")
                ),
            });
        }
        check_fits(&config, observations)?;
        let warnings = check_data(&config, observations)?;
        check_shardable(&config, observations, comm.size())?;
        let factory = factory.unwrap_or_else(|| Rc::new(config.network.clone()));
        let described = factory.describe();
        if described != config.network {
            return Err(EmError::config(
                "network",
                format!(
                    "{} records the network {}, the model factory builds {}",
                    config_path.display(),
                    serde_json::to_string(&config.network).unwrap_or_default(),
                    serde_json::to_string(&described).unwrap_or_default()
                ),
            ));
        }
        Ok(Loaded { config, state, changes, warnings, factory })
    }

    /// Attaches held-out observations (CIFAR's test split, fastMRI's validation split): every lap then draws
    /// one posterior sample per validation observation with the prior that drew the lap's training samples,
    /// and records the M-step's loss on them with the EMA weights every `mstep.log_every` steps (docs/method.md §8;
    /// [`crate::mstep::m_step_validated`]), in `lap-NNN/validation.jsonl` and as `val_loss_last` /
    /// `val_loss_min` in `metrics.jsonl`. The validation set is not stored in the run: pass it again after a
    /// resume.
    ///
    /// # Errors
    /// [`EmError::Config`] when the validation latents' shape differs from the training observations'.
    pub fn with_validation(mut self, validation: Observation) -> Result<Self> {
        self.em.set_validation(validation)?;
        Ok(self)
    }

    /// What the checks of the observations found worth saying but not refusing (observations that carry no
    /// information, such as all-zero mask rows), for the caller to show.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The changes of `config.json` this resume applies (resumable fields only; empty for a new run).
    pub fn config_changes(&self) -> &[ConfigChange] {
        &self.store.pending_changes
    }

    /// Shows progress (on rank 0) or not, whatever the configuration says; not saved in the run directory.
    pub fn set_progress(&mut self, progress: bool) {
        self.em.set_progress(progress);
    }

    /// Reports progress (laps, Gaussian EM and E-step chunks, M-step steps) to `observer` instead of the
    /// terminal display; not saved in the run directory.
    pub fn with_progress(mut self, observer: Rc<dyn ProgressObserver>) -> Self {
        self.em = self.em.with_progress(observer);
        self
    }

    /// The communicator the run's ranks share ([`Single`] for a one-process run).
    pub fn communicator(&self) -> &dyn Communicator {
        self.em.communicator()
    }

    /// Adds an observer (called after every lap, in the order added).
    pub fn add_observer(&mut self, observer: Box<dyn LapObserver>) {
        self.store.observers.push(observer);
    }

    /// Builder form of [`EmRun::add_observer`].
    pub fn with_observer(mut self, observer: impl LapObserver + 'static) -> Self {
        self.store.observers.push(Box::new(observer));
        self
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// The configuration.
    pub fn config(&self) -> &EmConfig {
        self.em.config()
    }

    /// The observations (on the run's device).
    pub fn observations(&self) -> &Observation {
        self.em.observations()
    }

    /// Laps completed and committed.
    pub fn completed_laps(&self) -> usize {
        self.store.state.completed_laps
    }

    /// The current Gaussian prior, once fitted.
    pub fn gaussian(&self) -> Option<&GaussianPrior> {
        self.em.gaussian()
    }

    /// The current model, once created.
    pub fn model(&self) -> Option<&PriorModel> {
        self.em.model()
    }

    /// The latest E-step samples (unfiltered), once drawn.
    pub fn samples(&self) -> Option<&Tensor> {
        self.em.samples()
    }

    /// The in-memory loop this run drives.
    pub fn em_loop(&self) -> &EmLoop {
        &self.em
    }

    /// Runs every remaining step up to `config.laps` laps.
    ///
    /// # Errors
    /// Any error of the steps (sampling, training, files, observers); the run directory then holds the last
    /// committed step and [`EmRun::resume`] continues from it.
    pub fn run(&mut self) -> Result<RunSummary> {
        let laps = self.em.config.laps;
        self.run_until(laps)
    }

    /// Runs the remaining steps up to `laps` laps (≤ `config.laps`): the Gaussian initialization if not done,
    /// the initial samples ([`crate::LapOrder::TrainThenSample`]), then the laps.
    ///
    /// # Errors
    /// As [`EmRun::run`].
    pub fn run_until(&mut self, laps: usize) -> Result<RunSummary> {
        let result = self.em.run_with(&mut self.store, laps);
        if result.is_err() && !self.store.state.gaussian_done {
            self.store.roll_back();
        }
        result?;
        Ok(RunSummary {
            completed_laps: self.store.state.completed_laps,
            metrics: read_jsonl(&self.store.dir.join(METRICS_FILE))?,
        })
    }
}

impl RunDir {
    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes what [`EmRun::create_with`] wrote, after a failure before the first commit (rank 0 only,
    /// best effort: the error being returned matters more than a file left behind).
    fn roll_back(&mut self) {
        let Some(existed) = self.created.take() else { return };
        if !self.comm.is_root() {
            return;
        }
        for name in [STATE_FILE, CONFIG_FILE, GAUSSIAN_FILE] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        let _ = remove_stale_temp_files(&self.dir);
        if !existed {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

impl RunStore for RunDir {
    fn save_gaussian(&mut self, _em: &EmLoop, prior: &GaussianPrior) -> Result<()> {
        self.write_gaussian(prior)
    }

    fn save_initial_samples(&mut self, _em: &EmLoop, samples: &Tensor) -> Result<()> {
        self.write_initial_samples(samples)
    }

    fn save_lap(&mut self, em: &EmLoop, outcome: &LapOutcome) -> Result<()> {
        self.write_lap(em, outcome)
    }

    /// The last committed step's Gaussian, model (from the last lap's checkpoint, built by the loop's
    /// factory) and this rank's shard of the samples.
    fn load_latest(&mut self, em: &EmLoop) -> Result<Option<Restored>> {
        let (dir, state, config, device) = (&self.dir, &self.state, &em.config, em.device);
        let (observations, factory, comm) = (&em.observations, &em.factory, &*em.comm);
        let home = data_device(config, device);
        let last = state.completed_laps.checked_sub(1).map(|l| lap_dir(dir, l));
        let gaussian = if !state.gaussian_done {
            None
        } else {
            let path = last.as_ref().map_or(dir.join(GAUSSIAN_FILE), |l| l.join(GAUSSIAN_FILE));
            Some(GaussianPrior::load(&path, device)?)
        };
        let model = match &last {
            Some(l) => Some(checkpoint::load_with(l, device, &**factory)?.0),
            None => None,
        };
        let path = match (&last, state.initial_samples_done) {
            (Some(l), _) => Some(l.join(SAMPLES_FILE)),
            (None, true) => Some(dir.join(INIT_DIR).join(SAMPLES_FILE)),
            (None, false) => None,
        };
        let samples = match path {
            None => None,
            Some(path) => {
                let all = read_npy(&path, home)?;
                let rows = training_rows(config, observations, comm.rank(), comm.size());
                if all.size().first()
                    != Some(&(observations.len() * config.estep.samples_per_observation as i64))
                {
                    return Err(EmError::file(
                        &path,
                        format!(
                            "holds {:?} samples, expected {} observations × {} samples per observation",
                            all.size(),
                            observations.len(),
                            config.estep.samples_per_observation
                        ),
                    ));
                }
                Some(if comm.size() == 1 { all } else { all.narrow(0, rows.start, rows.end - rows.start) })
            }
        };
        let progress = LoopState {
            gaussian_done: state.gaussian_done,
            initial_samples_done: state.initial_samples_done,
            completed_laps: state.completed_laps,
        };
        Ok(Some(Restored { state: progress, gaussian, model, samples }))
    }

    /// Rank 0 writes `state.bin` with `next` applied (the commit point of a step); every rank takes the new
    /// state once every rank has succeeded.
    ///
    /// A lap's commit also records `config.json`'s resumable changes (they were written into the lap's line of
    /// `metrics.jsonl`) as the configuration of the committed steps.
    fn commit(&mut self, _em: &EmLoop, written: Result<()>, next: LoopState) -> Result<()> {
        let text =
            serde_json::to_string(&self.stored_config).map_err(|e| EmError::config("config", e.to_string()));
        let written = written.and(text).and_then(|text| {
            let mut state = self.state.clone();
            state.gaussian_done = next.gaussian_done;
            state.initial_samples_done = next.initial_samples_done;
            state.completed_laps = next.completed_laps;
            if state.completed_laps != self.state.completed_laps || state.config.is_empty() {
                state.config = text;
            }
            if self.comm.is_root() {
                state.save(&self.dir.join(STATE_FILE))?;
            }
            Ok(state)
        });
        let state = sync(&*self.comm, written)?;
        if state.completed_laps != self.state.completed_laps {
            self.pending_changes.clear();
        }
        self.state = state;
        Ok(())
    }
}

/// What [`EmRun::load_run`] returns.
struct Loaded {
    config: EmConfig,
    state: RunState,
    changes: Vec<ConfigChange>,
    warnings: Vec<String>,
    factory: Rc<dyn ModelFactory>,
}

/// The checkpoint directory a prior path names: `path` itself when it holds a model checkpoint
/// (`weights.safetensors`), or the last completed lap of the run directory `path`.
///
/// # Errors
/// [`EmError::RunDir`] when `path` is neither, or the run has no completed lap; file errors naming the file.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(checkpoint::WEIGHTS_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if !is_run_dir(path) {
        return Err(EmError::RunDir {
            path: path.into(),
            reason: "is neither a checkpoint (weights.safetensors) nor a run directory (state.bin)".into(),
        });
    }
    let state = RunState::load(&path.join(STATE_FILE))?;
    match state.completed_laps.checked_sub(1) {
        Some(lap) => Ok(lap_dir(path, lap)),
        None => Err(EmError::RunDir { path: path.into(), reason: "has no completed lap yet".into() }),
    }
}
