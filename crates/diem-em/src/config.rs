//! Configuration of an EM run (docs/method.md §7.4, §8, §9a): [`EmConfig`] and its sections. Every section is
//! serde JSON with unknown keys rejected; [`EmConfig::from_file`] names the file and the field on error.

use std::path::Path;

use diem_models::{MlpConfig, NetworkConfig, TrainConfig, VeSchedule};
use serde::{Deserialize, Serialize};

use crate::error::{EmError, Result};

/// The version of the configuration format; [`EmConfig::version`] must equal it.
pub const CONFIG_VERSION: u32 = 1;

pub use diem_sampling::{
    Covariance, DiffPirSpec, DpsSpec, MmpsSpec, PgdmSpec, PosteriorMethod, SafeguardSpec, SamplerSpec,
    SolverMethod, SolverSpec, TmpdSpec, MAX_ITERATIONS, MAX_STEPS,
};

/// The MMPS settings of an E-step under their former name: [`MmpsSpec`], one [`PosteriorMethod`] among
/// others (`PosteriorMethod::Mmps(spec)`, or `spec.into()`).
pub type PosteriorSpec = MmpsSpec;

/// Re-labels a sampling-crate configuration error with the section's dotted name (`estep.posterior` +
/// `solver.iterations`).
fn in_section(section: &str, e: diem_sampling::SamplingError) -> EmError {
    match e {
        diem_sampling::SamplingError::Config { field, reason } => {
            EmError::config(format!("{section}.{field}"), reason)
        }
        other => EmError::Sampling(other),
    }
}

/// Refuses any number whose magnitude float32 cannot hold (above 3.4e38), naming its dotted field: every
/// number of a configuration ends up as a float32 tensor value or scalar (learning rates, Adam's ε and
/// decay, clipping norms, schedule bounds, filter bounds), where libtorch fails on overflow.
fn check_float32_range(value: &serde_json::Value, path: &str) -> Result<()> {
    let at = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() && v.abs() > f64::from(f32::MAX) => Err(EmError::config(
                if path.is_empty() { "config" } else { path },
                format!(
                    "{v:e} is beyond float32's range (±{:e}), which every number here must fit",
                    f32::MAX
                ),
            )),
            _ => Ok(()),
        },
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| check_float32_range(v, &at(k))),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, v)| check_float32_range(v, &at(&i.to_string())))
        }
        _ => Ok(()),
    }
}

/// The Gaussian EM initialization `fit_moments` (docs/method.md §7.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianEmConfig {
    /// The PPCA rank r of Σ_x (manifold: 5 = N; CIFAR/MRI: 64).
    pub rank: usize,
    /// EM iterations (default 16).
    pub iterations: usize,
    /// DDIM steps of each E-step (default 256).
    pub steps: usize,
    /// The solve of the exact `cov_x` MMPS system (manifold: CG to rtol 1e-3 with a cap of 10·N).
    pub solver: SolverSpec,
    /// Use only the first this many pairs (CIFAR: 16,384); `None` = all.
    #[serde(default)]
    pub max_pairs: Option<usize>,
    /// Of those, take every `stride`-th pair (MRI: every 4th of the first 16,384, docs/method.md §9c); default 1.
    #[serde(default = "one")]
    pub stride: usize,
    /// Pairs per E-step chunk.
    pub chunk_size: usize,
}

impl GaussianEmConfig {
    /// docs/method.md §7.4 for data of `n` entries per sample: rank `rank`, 16 iterations, DDIM 256, CG to rtol 1e-3
    /// with a cap of `10·n` iterations, chunks of 256 pairs.
    pub fn spec(rank: usize, n: usize) -> Self {
        Self {
            rank,
            iterations: 16,
            steps: 256,
            solver: SolverSpec { iterations: 10 * n.max(1), rtol: Some(1e-3), ..SolverSpec::cg(1) },
            max_pairs: None,
            stride: 1,
            chunk_size: 256,
        }
    }

    /// The indices of the pairs the fit uses among `n` observations: every `stride`-th of the first
    /// `max_pairs` (all when unset).
    pub fn pair_indices(&self, n: i64) -> Vec<i64> {
        let window = self.max_pairs.map_or(n, |m| (m as i64).min(n));
        (0..window).step_by(self.stride.max(1)).collect()
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`EmError::Config`] naming the field (prefixed by `field`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.rank == 0 {
            return Err(EmError::config(format!("{field}.rank"), "must be ≥ 1"));
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(EmError::config(
                format!("{field}.steps"),
                format!("must lie in 1..={MAX_STEPS}, got {}", self.steps),
            ));
        }
        if self.chunk_size == 0 {
            return Err(EmError::config(format!("{field}.chunk_size"), "must be ≥ 1"));
        }
        if self.stride == 0 {
            return Err(EmError::config(format!("{field}.stride"), "must be ≥ 1"));
        }
        if self.max_pairs == Some(0) {
            return Err(EmError::config(format!("{field}.max_pairs"), "must be ≥ 1 (or null for all)"));
        }
        self.solver.validate().map_err(|e| in_section(&format!("{field}.solver"), e))
    }
}

/// The E-step of every lap (docs/method.md §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EStepConfig {
    /// Posterior samples per observation (MRI: 2, the data set duplicated); sample `j` belongs to observation
    /// `j mod N`.
    pub samples_per_observation: usize,
    /// The sampler.
    pub sampler: SamplerSpec,
    /// The posterior method: MMPS (the plain object `{"covariance": …, "solver": …}` of every configuration
    /// so far) or another method of [`PosteriorMethod`], e.g. `{"dps": {"zeta": 1.0}}` for the DPS E-step of
    /// EMDiffusion.
    pub posterior: PosteriorMethod,
    /// Observations per chunk (the reference uses 256).
    pub chunk_size: usize,
    /// Optional memory budget in MiB: the chunk shrinks so that `chunk · N_x · 4 bytes · 64` stays below it
    /// (a rough allowance for the network's activations and the solver's vectors).
    #[serde(default)]
    pub memory_budget_mib: Option<u64>,
}

impl EStepConfig {
    /// The chunk size for samples of `x_numel` entries: [`EStepConfig::chunk_size`], reduced to the memory
    /// budget (at least 1).
    pub fn effective_chunk(&self, x_numel: i64) -> i64 {
        let mut chunk = self.chunk_size as i64;
        if let Some(mib) = self.memory_budget_mib {
            let per = (x_numel.max(1) as u64).saturating_mul(4 * 64);
            let fit = (mib.saturating_mul(1 << 20) / per.max(1)) as i64;
            chunk = chunk.min(fit.max(1));
        }
        chunk.max(1)
    }

    /// The E-step's method in words, for messages: `MMPS with the Tweedie covariance and Cg × 3, Pc { … }`,
    /// or the method's [`PosteriorMethod`] display (`dps (ζ = 1), Ddpm { steps: 64 }`).
    pub fn describe(&self) -> String {
        match &self.posterior {
            PosteriorMethod::Mmps(m) => format!(
                "MMPS with the {:?} covariance and {:?} × {}, {:?}",
                m.covariance, m.solver.method, m.solver.iterations, self.sampler
            ),
            other => format!("{other}, {:?}", self.sampler),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.samples_per_observation == 0 {
            return Err(EmError::config("estep.samples_per_observation", "must be ≥ 1"));
        }
        self.sampler.validate().map_err(|e| in_section("estep.sampler", e))?;
        if self.chunk_size == 0 {
            return Err(EmError::config("estep.chunk_size", "must be ≥ 1"));
        }
        self.posterior.validate().map_err(|e| in_section("estep.posterior", e))
    }
}

/// The order of the two steps inside a lap (docs/method.md §8 "order inside a lap").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LapOrder {
    /// Manifold: an initial E-step with the Gaussian prior builds π_0; every lap then trains on π (M-step) and
    /// regenerates π with the new model (E-step). K laps = K M-steps and K+1 E-steps.
    TrainThenSample,
    /// CIFAR/MRI: every lap samples with the previous model (the Gaussian at lap 0, with the exact `cov_x`
    /// MMPS), optionally refits μ_x by PPCA, then trains. K laps = K E-steps and K M-steps.
    SampleThenTrain,
}

/// The PPCA refit of `(μ_x, Σ_x)` on the E-step samples (CIFAR/MRI, docs/method.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefitConfig {
    /// The PPCA rank (64 in the authors' code).
    pub rank: usize,
    /// Fit on the first this many samples (16,384 in the authors' code).
    pub samples: usize,
}

/// The observation-space diagnostic (no ground truth needed): re-simulate `ŷ = A x + ε` from the lap's
/// samples and compare with the observed `y`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Compute a debiased Sinkhorn divergence between `y` and `ŷ` on the first this many observations
    /// (flattened); `None` or 0 = skip. Costs `O(n²)` memory/time: keep it ≤ a few thousand.
    #[serde(default)]
    pub sinkhorn_subsample: Option<usize>,
    /// The magnitude beyond which an E-step sample counts as implausible in the consistency report
    /// (`estep_beyond_bound`): ten times the data's range. `None` (the default) estimates the range from the
    /// current Gaussian prior as the width `4 σ_i` of each coordinate's ±2σ interval: the bound is the
    /// largest `|μ_i| + 40 σ_i`. The manifold presets set 40 (10 × the width of [−2, 2]).
    #[serde(default)]
    pub sample_bound: Option<f64>,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self { sinkhorn_subsample: Some(1024), sample_bound: None }
    }
}

/// Everything about an EM run (docs/method.md §7.4, §8). Stored as the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmConfig {
    /// Must equal [`CONFIG_VERSION`].
    pub version: u32,
    /// The run seed: every lap, E-step chunk and M-step derives its own seed from it ([`crate::derive_seed`]).
    pub seed: u64,
    /// Laps K.
    pub laps: usize,
    /// The order inside a lap.
    pub order: LapOrder,
    /// The denoiser's architecture (a new network at the first M-step).
    pub network: NetworkConfig,
    /// The Gaussian initialization.
    pub gaussian: GaussianEmConfig,
    /// The E-step.
    pub estep: EStepConfig,
    /// The M-step (trainer); its `schedule` is the model's noise schedule for training and sampling.
    pub mstep: TrainConfig,
    /// Drop samples with any coordinate outside `(−bound, bound)` before training (manifold: 3);
    /// `None` = keep all.
    #[serde(default)]
    pub filter_bound: Option<f64>,
    /// PPCA refit of `(μ_x, Σ_x)` after every E-step (CIFAR/MRI); `None` = keep the Gaussian fit.
    #[serde(default)]
    pub refit: Option<RefitConfig>,
    /// The observation-space diagnostic.
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// Report progress (laps, E-step chunks, training steps) through the run's `ProgressObserver`: by default
    /// terminal bars, or timestamped log lines when the output is not a terminal.
    #[serde(default)]
    pub progress: bool,
    /// Where the observations and the E-step samples live (default: on the run's device).
    #[serde(default)]
    pub storage: DataStorage,
}

/// Where an [`crate::EmRun`] keeps the data set: the observations and the E-step samples.
///
/// Computation always runs on the run's device. With [`DataStorage::Host`] the E-step moves one chunk of
/// observations to the device at a time and its samples back, the M-step moves one batch at a time, and the
/// Gaussian initialization moves only the pairs it uses. This is what lets a data set larger than the GPU's
/// memory run on one GPU (MRI at paper scale: about 25 GB of observations and 25 GB of samples); on a CPU
/// run both choices are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataStorage {
    /// On the run's device (fastest when everything fits).
    #[default]
    Device,
    /// In host memory, moved to the device chunk by chunk and batch by batch.
    Host,
}

impl EmConfig {
    /// The manifold experiment of docs/method.md §9a with the paper's E-step (Tweedie, CG 3), `laps` laps: PC 4096,
    /// MLP 5 → (256, 256, 256) → 5, 65,536 steps per lap, filter (−3, 3), Gaussian rank 5.
    pub fn manifold(laps: usize) -> Self {
        Self {
            version: CONFIG_VERSION,
            seed: 0,
            laps,
            order: LapOrder::TrainThenSample,
            network: NetworkConfig::Mlp(MlpConfig::default()),
            gaussian: GaussianEmConfig::spec(5, 5),
            estep: EStepConfig {
                samples_per_observation: 1,
                sampler: SamplerSpec::Pc { steps: 4096, corrections: 1, tau: 0.1 },
                posterior: MmpsSpec::new(Covariance::Tweedie, SolverSpec::cg(3)).into(),
                chunk_size: 256,
                memory_budget_mib: None,
            },
            mstep: TrainConfig::manifold(),
            filter_bound: Some(3.0),
            refit: None,
            // The manifold's data span [−2, 2], a range of 4: a sample beyond 10× that is implausible.
            diagnostics: DiagnosticsConfig { sample_bound: Some(40.0), ..DiagnosticsConfig::default() },
            progress: false,
            storage: DataStorage::Device,
        }
    }

    /// The manifold preset of the authors' code: as [`EmConfig::manifold`] but the E-step uses the `cov_x` heuristic with
    /// CG to rtol 1e-3 (cap 50 = 10·N).
    pub fn manifold_reference(laps: usize) -> Self {
        let mut c = Self::manifold(laps);
        // The reference code has no safeguards: a reproduction of it runs without them.
        c.estep.posterior = PosteriorMethod::Mmps(MmpsSpec {
            covariance: Covariance::CovX,
            solver: SolverSpec { iterations: 50, rtol: Some(1e-3), ..SolverSpec::cg(1) },
            safeguards: SafeguardSpec::none(),
        });
        c
    }

    /// Reads and validates a JSON configuration file.
    ///
    /// # Errors
    /// [`EmError::Io`] or [`EmError::Json`] (serde names the unknown, missing or mistyped field and its line),
    /// each with the file's path; [`EmError::Config`] (naming the field, prefixed by the path) for invalid
    /// values.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = diem_models::checkpoint::read_regular(path).map_err(|e| EmError::io(path, e))?;
        Self::from_json(path, &bytes)
    }

    /// [`EmConfig::from_file`] on the bytes of the file `path` (named in errors only).
    ///
    /// # Errors
    /// As [`EmConfig::from_file`].
    pub fn from_json(path: &Path, bytes: &[u8]) -> Result<Self> {
        let config: Self =
            serde_json::from_slice(bytes).map_err(|source| EmError::Json { path: path.into(), source })?;
        config.validate().map_err(|e| match e {
            EmError::Config { field, reason } => {
                EmError::File { path: path.into(), reason: format!("field `{field}`: {reason}") }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`EmError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.version != CONFIG_VERSION {
            return Err(EmError::config(
                "version",
                format!("version {} is not supported (expected {CONFIG_VERSION})", self.version),
            ));
        }
        if self.laps == 0 {
            return Err(EmError::config("laps", "must be ≥ 1 (a run of no lap learns nothing)"));
        }
        if self.mstep.steps == 0 {
            return Err(EmError::config("mstep.steps", "must be ≥ 1 (an M-step of no step trains nothing)"));
        }
        self.network.validate().map_err(|e| prefixed("network", e))?;
        self.gaussian.validate("gaussian")?;
        self.estep.validate()?;
        self.mstep.validate().map_err(|e| prefixed("mstep", e))?;
        if let Some(b) = self.filter_bound {
            if !(b.is_finite() && b > 0.0) {
                return Err(EmError::config("filter_bound", format!("must be finite and > 0, got {b}")));
            }
        }
        if let Some(r) = &self.refit {
            if r.rank == 0 {
                return Err(EmError::config("refit.rank", "must be ≥ 1"));
            }
            if r.samples < 2 {
                return Err(EmError::config("refit.samples", format!("must be ≥ 2, got {}", r.samples)));
            }
        }
        check_float32_range(
            &serde_json::to_value(self).map_err(|e| EmError::config("config", e.to_string()))?,
            "",
        )?;
        if let Some(b) = self.diagnostics.sample_bound {
            if !(b.is_finite() && b > 0.0) {
                return Err(EmError::config(
                    "diagnostics.sample_bound",
                    format!("must be finite and > 0 (or null), got {b}"),
                ));
            }
        }
        Ok(())
    }

    /// The model's noise schedule (`mstep.schedule`).
    pub fn schedule(&self) -> VeSchedule {
        self.mstep.schedule
    }

    /// The solve of the exact `cov_x` MMPS that E-steps under the Gaussian prior use (lap 0 of
    /// sample-then-train runs, the initial E-step of train-then-sample runs): the E-step method's solve, or,
    /// for a method without one (DPS), the Gaussian fit's.
    pub fn gaussian_estep_solver(&self) -> SolverSpec {
        self.estep.posterior.solver().copied().unwrap_or(self.gaussian.solver)
    }
}

/// The fields of [`EmConfig`] that may change when a run is resumed (dotted names; a name covers the fields
/// below it). None of them changes what a lap computes, so a resumed run stays the run it was:
///
/// - `laps`: more laps continue the run, fewer stop it earlier (completed laps stay);
/// - `progress`, `mstep.progress`: the progress display;
/// - `diagnostics`: the observation-space diagnostic of `metrics.jsonl` (it draws from its own seed);
/// - `storage`: where the data live between steps (host or device memory); every computation still runs
///   on the run's device, chunk by chunk and batch by batch.
///
/// Every other field (the seed, the network, the Gaussian fit, the E-step, the M-step, the filter, the
/// refit, the order) shapes the samples and the weights of every lap, so a change would mix two
/// configurations in one run: [`crate::EmRun::resume`] refuses it and names the fields.
pub const RESUMABLE: &[&str] = &["laps", "progress", "mstep.progress", "diagnostics", "storage"];

/// One field that differs between two configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    /// The dotted field name (`mstep.steps`, `network.mlp.hidden`).
    pub field: String,
    /// The value before (`null` when the field was absent).
    pub from: serde_json::Value,
    /// The value after (`null` when the field is absent).
    pub to: serde_json::Value,
}

impl ConfigChange {
    /// Whether [`RESUMABLE`] allows this change on resume.
    pub fn resumable(&self) -> bool {
        RESUMABLE.iter().any(|r| self.field == *r || self.field.starts_with(&format!("{r}.")))
    }
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} → {})", self.field, self.from, self.to)
    }
}

/// The fields in which `new` differs from `old`, compared as JSON (the leaves: numbers, strings, arrays
/// as a whole; a variant change such as `network.mlp` → `network.unet` shows as both keys).
///
/// # Errors
/// [`EmError::Config`] if a configuration cannot be serialized (never for a valid one).
pub fn config_changes(old: &EmConfig, new: &EmConfig) -> Result<Vec<ConfigChange>> {
    let json = |c: &EmConfig| serde_json::to_value(c).map_err(|e| EmError::config("config", e.to_string()));
    let mut out = Vec::new();
    diff_values("", &json(old)?, &json(new)?, &mut out);
    Ok(out)
}

fn diff_values(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<ConfigChange>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let field = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                diff_values(&field, va, vb, out);
            }
        }
        _ if a != b => out.push(ConfigChange { field: prefix.to_string(), from: a.clone(), to: b.clone() }),
        _ => {}
    }
}

/// serde's default for [`GaussianEmConfig::stride`].
fn one() -> usize {
    1
}

/// Re-labels a models-crate configuration error with the section's name.
fn prefixed(section: &str, e: diem_models::Error) -> EmError {
    match e {
        diem_models::Error::Config { field, reason } => EmError::config(format!("{section}.{field}"), reason),
        other => EmError::Models(other),
    }
}
