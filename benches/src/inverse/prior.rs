//! The prior of the benchmark: a diem checkpoint (VE EDM denoiser) or a TorchScript VP ε-network wrapped as a
//! VE [`Denoiser`] (docs/method.md §2 "VP models", §4.6), and the sampling plan each kind runs on.
//!
//! **VP wrapper.** For a VE noise level σ, `ᾱ = 1/(1 + σ²)`; the network index `i` is the one whose
//! `σ_i = √((1 − ᾱ_i)/ᾱ_i)` is nearest to σ in `ln σ` (the respaced grid hits them exactly), and
//!
//! ```text
//! x_vp = √ᾱ · x,   ε̂ = net(x_vp, i)[:, :3],   x̂ = clip((x_vp − √(1 − ᾱ) ε̂)/√ᾱ, −1, 1)
//! ```
//!
//! **Respaced grid.** docs/method.md §4.6's sampler (DDIM η = 1 on the retained indices
//! `S = {round(k · 999/(T − 1))}`, start `x_T ~ N(0, I)` in VP, no final denoise) is exactly diem's DDPM
//! (docs/method.md §4.2) on the VE grid `σ_k = √((1 − ᾱ_{i_k})/ᾱ_{i_k})`, `k = 0..T−1`, followed by `σ_T = 0`, started
//! at `x = x_T/√ᾱ_{i_0} ~ N(0, (1 + σ_0²) I)`: with `X = x/√ᾱ` the VP update's mean is
//! `x̂ + (σ_s²/σ_t²)(X_t − x̂)` and its noise `σ_s √(1 − σ_s²/σ_t²)`, and a correction `c_t Δ` of the VP state is
//! `(1 − σ_s²/σ_t²) Δ` of the VE state, i.e. `x̂ + Δ` fed to the DDPM update. [`RespacedSchedule`] maps the
//! uniform times `t_k = 1 − k/T` onto that grid, so the samplers of diem-sampling run on it unchanged.

use std::path::Path;

use diem_models::{checkpoint, Denoiser, PriorModel, Schedule, VeSchedule};
use diem_sampling::{start_from_noise, NoiseRng, TimeGrid};
use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::error::{BenchError, Result};

/// File name of the TorchScript network of a VP prior directory.
pub const VP_MODEL_FILE: &str = "model.pt";
/// File name of the description of a VP prior directory.
pub const VP_CONFIG_FILE: &str = "prior.json";

/// `prior.json` of a VP prior directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpPriorConfig {
    /// Must be `"vp-eps"` (ε-prediction).
    pub kind: String,
    /// First β of the linear schedule (1e-4 for the DPS ADM model).
    pub beta_start: f64,
    /// Last β (0.02).
    pub beta_end: f64,
    /// Number of training steps (1000).
    pub timesteps: usize,
    /// Clip x̂ to `[−1, 1]` (true for the DPS ADM model).
    #[serde(default = "default_true")]
    pub clip: bool,
    /// Output channels of the network (6 with learned variances, or 3); the first 3 are ε̂.
    pub out_channels: i64,
}

fn default_true() -> bool {
    true
}

/// The cumulative products `ᾱ_i = Π_{j ≤ i}(1 − β_j)` of a linear β schedule (docs/method.md §4.6).
#[derive(Debug, Clone, PartialEq)]
pub struct VpTable {
    alpha_bar: Vec<f64>,
}

impl VpTable {
    /// `β_i` linear from `beta_start` to `beta_end` over `timesteps` steps.
    ///
    /// # Errors
    /// [`BenchError::Config`] unless `timesteps ≥ 2` and `0 < beta_start ≤ beta_end < 1`.
    pub fn linear(beta_start: f64, beta_end: f64, timesteps: usize) -> Result<Self> {
        if timesteps < 2 || !(beta_start > 0.0 && beta_start <= beta_end && beta_end < 1.0) {
            return Err(BenchError::config(
                "prior.json",
                format!("need timesteps ≥ 2 and 0 < beta_start ≤ beta_end < 1, got {timesteps}, {beta_start}, {beta_end}"),
            ));
        }
        let mut acc = 1.0;
        let alpha_bar = (0..timesteps)
            .map(|i| {
                let beta = beta_start + (beta_end - beta_start) * i as f64 / (timesteps - 1) as f64;
                acc *= 1.0 - beta;
                acc
            })
            .collect();
        Ok(Self { alpha_bar })
    }

    /// Number of training steps.
    pub fn len(&self) -> usize {
        self.alpha_bar.len()
    }

    /// Whether the table is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.alpha_bar.is_empty()
    }

    /// `ᾱ_i`.
    pub fn alpha_bar(&self, i: usize) -> f64 {
        self.alpha_bar[i]
    }

    /// The VE noise level of index `i`, `σ_i = √((1 − ᾱ_i)/ᾱ_i)` (docs/method.md §2).
    pub fn sigma(&self, i: usize) -> f64 {
        let a = self.alpha_bar[i];
        ((1.0 - a) / a).sqrt()
    }

    /// The index whose `σ_i` is nearest to `sigma` in `ln σ` (exact on the respaced grid).
    pub fn index_of(&self, sigma: f64) -> usize {
        let target = sigma.max(f64::MIN_POSITIVE).ln();
        (0..self.len())
            .min_by(|&a, &b| {
                (self.sigma(a).ln() - target).abs().total_cmp(&(self.sigma(b).ln() - target).abs())
            })
            .unwrap_or(0)
    }

    /// The retained indices `round(k · (L − 1)/(T − 1))`, `k = 0..T−1`, largest first (docs/method.md §4.6).
    ///
    /// # Errors
    /// [`BenchError::Config`] unless `2 ≤ steps ≤ L`.
    pub fn retained(&self, steps: usize) -> Result<Vec<usize>> {
        let last = self.len() - 1;
        if steps < 2 || steps > self.len() {
            return Err(BenchError::config(
                "--steps",
                format!("a VP prior needs 2 ≤ steps ≤ {}, got {steps}", self.len()),
            ));
        }
        let mut idx: Vec<usize> =
            (0..steps).map(|k| (k as f64 * last as f64 / (steps - 1) as f64).round() as usize).collect();
        idx.reverse();
        Ok(idx)
    }
}

/// A VE schedule through a table `σ_0 > σ_1 > … > σ_T ≥ 0` at the uniform times `t_k = 1 − k/T`, linear in
/// between: the uniform [`TimeGrid`] of T steps visits exactly the table's values.
#[derive(Debug, Clone, PartialEq)]
pub struct RespacedSchedule {
    sigmas: Vec<f64>,
}

impl RespacedSchedule {
    /// The schedule through `sigmas` (at least 2, strictly decreasing, finite, ≥ 0).
    ///
    /// # Errors
    /// [`BenchError::Config`] otherwise.
    pub fn new(sigmas: Vec<f64>) -> Result<Self> {
        let ok = sigmas.len() >= 2
            && sigmas.iter().all(|s| s.is_finite() && *s >= 0.0)
            && sigmas.windows(2).all(|w| w[1] < w[0]);
        if !ok {
            return Err(BenchError::config(
                "RespacedSchedule",
                "needs ≥ 2 finite, strictly decreasing σ ≥ 0",
            ));
        }
        Ok(Self { sigmas })
    }

    /// The respaced VP grid of `steps` steps: `σ_{i_k}` over the retained indices, then 0.
    ///
    /// # Errors
    /// As [`VpTable::retained`].
    pub fn vp(table: &VpTable, steps: usize) -> Result<Self> {
        let mut sigmas: Vec<f64> = table.retained(steps)?.into_iter().map(|i| table.sigma(i)).collect();
        sigmas.push(0.0);
        Self::new(sigmas)
    }

    /// The table `σ_0, …, σ_T`.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn steps(&self) -> f64 {
        (self.sigmas.len() - 1) as f64
    }

    /// Segment index and fraction of time `t`.
    fn locate(&self, t: f64) -> (usize, f64) {
        let u = ((1.0 - t.clamp(0.0, 1.0)) * self.steps()).max(0.0);
        let k = (u.floor() as usize).min(self.sigmas.len() - 2);
        (k, u - k as f64)
    }
}

impl Schedule for RespacedSchedule {
    fn sigma(&self, t: &Tensor) -> Tensor {
        let values = Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap_or_default();
        let out: Vec<f64> = values.into_iter().map(|v| self.sigma_at(v)).collect();
        Tensor::from_slice(&out).reshape(t.size()).to_kind(t.kind()).to_device(t.device())
    }

    fn sigma_at(&self, t: f64) -> f64 {
        let (k, f) = self.locate(t);
        self.sigmas[k] + (self.sigmas[k + 1] - self.sigmas[k]) * f
    }

    fn time_of(&self, sigma: f64) -> f64 {
        let n = self.sigmas.len();
        if sigma >= self.sigmas[0] {
            return 1.0;
        }
        if sigma <= self.sigmas[n - 1] {
            return 0.0;
        }
        let k = self.sigmas.windows(2).position(|w| w[0] >= sigma && sigma >= w[1]).unwrap_or(n - 2);
        let f = (self.sigmas[k] - sigma) / (self.sigmas[k] - self.sigmas[k + 1]);
        1.0 - (k as f64 + f) / self.steps()
    }

    fn g2_at(&self, t: f64) -> f64 {
        let (k, f) = self.locate(t);
        let (a, b) = (self.sigmas[k], self.sigmas[k + 1]);
        // d σ(t)²/dt on the linear segment (σ grows with t).
        2.0 * (a + (b - a) * f) * (a - b) * self.steps()
    }
}

/// The schedule a [`SamplingPlan`] runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanSchedule {
    /// A VE prior's own exponential schedule.
    Ve(VeSchedule),
    /// The respaced VP grid.
    Vp(RespacedSchedule),
}

impl Schedule for PlanSchedule {
    fn sigma(&self, t: &Tensor) -> Tensor {
        match self {
            Self::Ve(s) => s.sigma(t),
            Self::Vp(s) => s.sigma(t),
        }
    }
    fn sigma_at(&self, t: f64) -> f64 {
        match self {
            Self::Ve(s) => s.sigma_at(t),
            Self::Vp(s) => s.sigma_at(t),
        }
    }
    fn time_of(&self, sigma: f64) -> f64 {
        match self {
            Self::Ve(s) => s.time_of(sigma),
            Self::Vp(s) => s.time_of(sigma),
        }
    }
    fn g2_at(&self, t: f64) -> f64 {
        match self {
            Self::Ve(s) => s.g2_at(t),
            Self::Vp(s) => s.g2_at(t),
        }
    }
}

/// The TorchScript VP ε-network as a VE [`Denoiser`] (see the module docs).
pub struct VpEpsDenoiser {
    module: CModule,
    table: VpTable,
    clip: bool,
    kind: Kind,
}

impl std::fmt::Debug for VpEpsDenoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpEpsDenoiser")
            .field("timesteps", &self.table.len())
            .field("clip", &self.clip)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VpEpsDenoiser {
    /// Loads `dir/model.pt` and `dir/prior.json` onto `device` (eval mode).
    ///
    /// # Errors
    /// IO, JSON and TorchScript errors naming the file; [`BenchError::Config`] for a `kind` other than
    /// `"vp-eps"`, fewer than 3 output channels or a bad β schedule.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let path = dir.join(VP_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
        let config: VpPriorConfig =
            serde_json::from_str(&text).map_err(|source| BenchError::Json { path: path.clone(), source })?;
        if config.kind != "vp-eps" || config.out_channels < 3 {
            return Err(BenchError::config(
                path.display().to_string(),
                format!(
                    "expected kind \"vp-eps\" and out_channels ≥ 3, got {:?}, {}",
                    config.kind, config.out_channels
                ),
            ));
        }
        let table = VpTable::linear(config.beta_start, config.beta_end, config.timesteps)?;
        let model_path = dir.join(VP_MODEL_FILE);
        let mut module = CModule::load_on_device(&model_path, device).map_err(|e| {
            BenchError::config(model_path.display().to_string(), format!("loading TorchScript: {e}"))
        })?;
        module.set_eval();
        let kind = module
            .named_parameters()
            .ok()
            .and_then(|p| p.first().map(|(_, t)| t.kind()))
            .unwrap_or(Kind::Float);
        Ok(Self { module, table, clip: config.clip, kind })
    }

    /// The β table.
    pub fn table(&self) -> &VpTable {
        &self.table
    }

    /// The network's floating-point kind (that of its first parameter).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `x̂` for `x : [N, 3, H, W]` and σ (`[]` or `[N]`); see the module docs.
    ///
    /// # Errors
    /// TorchScript errors, or an output with fewer than 3 channels.
    pub fn try_denoise(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let n = x.size()[0];
        let sigmas = Vec::<f64>::try_from(sigma.detach().to_kind(Kind::Double).reshape([-1]))?;
        let sigmas: Vec<f64> = if sigmas.len() == 1 { vec![sigmas[0]; n as usize] } else { sigmas };
        let index: Vec<i64> = sigmas.iter().map(|&s| self.table.index_of(s) as i64).collect();
        let sig = Tensor::from_slice(&sigmas).to_kind(x.kind()).to_device(x.device()).reshape([n, 1, 1, 1]);
        let alpha_bar = (sig.square() + 1.0).reciprocal();
        let x_vp = x * alpha_bar.sqrt();
        let t = Tensor::from_slice(&index).to_device(x.device());
        let out = self.module.forward_ts(&[&x_vp, &t])?;
        if out.dim() != 4 || out.size()[1] < 3 {
            return Err(BenchError::config(
                "VP network output",
                format!("expected [N, ≥3, H, W], got {:?}", out.size()),
            ));
        }
        let eps = out.narrow(1, 0, 3);
        let x_hat = (x_vp - (-&alpha_bar + 1.0).sqrt() * eps) / alpha_bar.sqrt();
        Ok(if self.clip { x_hat.clamp(-1.0, 1.0) } else { x_hat })
    }
}

impl Denoiser for VpEpsDenoiser {
    /// [`VpEpsDenoiser::try_denoise`].
    ///
    /// # Panics
    /// When the TorchScript module fails (wrong input shape or device).
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.try_denoise(x_t, sigma).unwrap_or_else(|e| panic!("VP prior: {e}"))
    }
}

/// A VE denoiser trained on data `s` times the benchmark's `[−1, 1]` scale (diem's CIFAR and MRI priors use
/// `[−2, 2]`, `s = 2`), seen on the benchmark's scale: `d'(x, σ) = d(s x, s σ)/s`, prior mean `μ/s`, and the
/// schedule `σ'(t) = σ(t)/s`. With `x' = x/s` a clean image on the benchmark's scale, `x'_t = x' + σ' z`
/// corresponds to the prior's `s x'_t = x + σ z`, so the wrapped denoiser is the prior's posterior mean.
pub struct ScaledDenoiser {
    inner: Box<dyn Denoiser>,
    schedule: VeSchedule,
    scale: f64,
    mean: Option<Tensor>,
}

/// A diem checkpoint's model as a [`Denoiser`] that owns its variables.
struct ModelDenoiser(Box<PriorModel>);

impl Denoiser for ModelDenoiser {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.0.denoiser().denoise(x_t, sigma)
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.0.denoiser().prior_mean()
    }
}

impl ScaledDenoiser {
    /// Wraps `inner` (with its `schedule`) for data at `scale` times the benchmark's scale.
    ///
    /// # Errors
    /// [`BenchError::Config`] unless `scale` is finite and positive and the scaled schedule is valid.
    pub fn new(inner: Box<dyn Denoiser>, schedule: VeSchedule, scale: f64) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(BenchError::config("--prior-scale", format!("must be finite and > 0, got {scale}")));
        }
        let schedule = VeSchedule::new(schedule.a / scale, schedule.b / scale)
            .map_err(|e| BenchError::config("--prior-scale", e.to_string()))?;
        let mean = inner.prior_mean().map(|m| m / scale);
        Ok(Self { inner, schedule, scale, mean })
    }

    /// A diem checkpoint's model wrapped for data at `scale` times the benchmark's scale.
    ///
    /// # Errors
    /// As [`ScaledDenoiser::new`].
    pub fn from_model(model: Box<PriorModel>, scale: f64) -> Result<Self> {
        let schedule = model.schedule();
        Self::new(Box::new(ModelDenoiser(model)), schedule, scale)
    }

    /// The prior's schedule on the benchmark's scale, `σ(t)/s`.
    pub fn schedule(&self) -> VeSchedule {
        self.schedule
    }
}

impl Denoiser for ScaledDenoiser {
    fn denoise(&self, x_t: &Tensor, sigma: &Tensor) -> Tensor {
        self.inner.denoise(&(x_t * self.scale), &(sigma * self.scale)) / self.scale
    }

    fn prior_mean(&self) -> Option<&Tensor> {
        self.mean.as_ref()
    }
}

/// Where the prior comes from.
pub enum PriorSource {
    /// A diem checkpoint (VE EDM denoiser) with its schedule.
    Ve(Box<PriorModel>),
    /// A TorchScript VP ε-network.
    Vp(Box<VpEpsDenoiser>),
    /// Any VE denoiser with a schedule (tests: the exact Gaussian denoiser).
    Custom(Box<dyn Denoiser>, VeSchedule),
}

/// The prior of a benchmark run, its floating-point kind and a one-line description.
pub struct BenchPrior {
    /// The source.
    pub source: PriorSource,
    /// The kind images and samples are computed in.
    pub kind: Kind,
    /// What was loaded (for logs and summaries).
    pub description: String,
}

impl std::fmt::Debug for BenchPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchPrior")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .finish()
    }
}

impl BenchPrior {
    /// Loads `dir`: a VP prior when it holds `prior.json` and `model.pt`, a diem checkpoint when it holds
    /// `config.json` and `weights.safetensors`.
    ///
    /// # Errors
    /// [`BenchError::Config`] when the folder is neither; loading errors otherwise.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        Self::load_scaled(dir, device, 1.0)
    }

    /// [`BenchPrior::load`] for a diem checkpoint trained on data `scale` times the benchmark's `[−1, 1]`
    /// scale (2 for diem's CIFAR and MRI priors, whose pixels span `[−2, 2]`), wrapped in a
    /// [`ScaledDenoiser`]. A VP prior must have scale 1 (its network clips to `[−1, 1]`).
    ///
    /// # Errors
    /// As [`BenchPrior::load`]; [`BenchError::Config`] for a bad scale or a scale ≠ 1 with a VP prior.
    pub fn load_scaled(dir: &Path, device: Device, scale: f64) -> Result<Self> {
        if dir.join(VP_CONFIG_FILE).is_file() && dir.join(VP_MODEL_FILE).is_file() {
            if scale != 1.0 {
                return Err(BenchError::config("--prior-scale", "a VP prior works on [−1, 1]: use scale 1"));
            }
            let net = VpEpsDenoiser::load(dir, device)?;
            let kind = net.kind();
            let description =
                format!("VP ε-network {} ({} steps, TorchScript)", dir.display(), net.table().len());
            return Ok(Self { source: PriorSource::Vp(Box::new(net)), kind, description });
        }
        if dir.join(checkpoint::CONFIG_FILE).is_file() && dir.join(checkpoint::WEIGHTS_FILE).is_file() {
            let (model, _ema) = checkpoint::load(dir, device)?;
            let mut description =
                format!("diem checkpoint {} ({} parameters, VE)", dir.display(), model.num_parameters());
            if scale == 1.0 {
                return Ok(Self { source: PriorSource::Ve(Box::new(model)), kind: Kind::Float, description });
            }
            description.push_str(&format!(", data scale {scale}"));
            let scaled = ScaledDenoiser::from_model(Box::new(model), scale)?;
            let schedule = scaled.schedule();
            let source = PriorSource::Custom(Box::new(scaled), schedule);
            return Ok(Self { source, kind: Kind::Float, description });
        }
        Err(BenchError::config(
            "--prior",
            format!(
                "{} holds neither {VP_MODEL_FILE} + {VP_CONFIG_FILE} (VP) nor {} + {} (diem checkpoint)",
                dir.display(),
                checkpoint::CONFIG_FILE,
                checkpoint::WEIGHTS_FILE
            ),
        ))
    }

    /// A VE prior from any denoiser and schedule.
    pub fn custom(denoiser: Box<dyn Denoiser>, schedule: VeSchedule, kind: Kind, description: &str) -> Self {
        Self { source: PriorSource::Custom(denoiser, schedule), kind, description: description.into() }
    }

    /// The denoiser `d(x, σ)` in VE units.
    pub fn denoiser(&self) -> &dyn Denoiser {
        match &self.source {
            PriorSource::Ve(m) => m.denoiser(),
            PriorSource::Vp(n) => n.as_ref(),
            PriorSource::Custom(d, _) => d.as_ref(),
        }
    }

    /// Whether this is a VP prior (sampled on the respaced grid of docs/method.md §4.6).
    pub fn is_vp(&self) -> bool {
        matches!(self.source, PriorSource::Vp(_))
    }

    /// The sampling plan for `steps` steps.
    ///
    /// # Errors
    /// [`BenchError::Config`] for 0 steps (or fewer than 2 with a VP prior).
    pub fn plan(&self, steps: usize) -> Result<SamplingPlan> {
        let grid = TimeGrid::uniform(steps)?;
        Ok(match &self.source {
            PriorSource::Ve(m) => SamplingPlan { schedule: PlanSchedule::Ve(m.schedule()), grid, vp: false },
            PriorSource::Custom(_, s) => SamplingPlan { schedule: PlanSchedule::Ve(*s), grid, vp: false },
            PriorSource::Vp(n) => SamplingPlan {
                schedule: PlanSchedule::Vp(RespacedSchedule::vp(n.table(), steps)?),
                grid,
                vp: true,
            },
        })
    }
}

/// Schedule, grid and conventions of one sampling run.
#[derive(Debug, Clone)]
pub struct SamplingPlan {
    /// σ(t).
    pub schedule: PlanSchedule,
    /// The uniform grid of T steps.
    pub grid: TimeGrid,
    /// VP conventions: start `N(0, (1 + σ_0²) I)`, no final denoise, VP-scaled DPS/GDM steps.
    pub vp: bool,
}

impl SamplingPlan {
    /// The number of steps T.
    pub fn steps(&self) -> usize {
        self.grid.steps()
    }

    /// The initial state from standard normals `z`: `μ_x + σ(1) z` (VE, docs/method.md §4.1) or `√(1 + σ_0²) z`
    /// (`x_T ~ N(0, I)` in VP, divided by `√ᾱ_T`).
    ///
    /// # Errors
    /// As [`start_from_noise`].
    pub fn initial(&self, denoiser: &dyn Denoiser, z: &Tensor) -> Result<Tensor> {
        let sigma0 = self.schedule.sigma_at(self.grid.start());
        if self.vp {
            Ok(z * (1.0 + sigma0 * sigma0).sqrt())
        } else {
            Ok(start_from_noise(denoiser, sigma0, z)?)
        }
    }

    /// Draws the initial state of a batch `shape` with `rng`.
    ///
    /// # Errors
    /// As [`SamplingPlan::initial`].
    pub fn draw_initial(
        &self,
        denoiser: &dyn Denoiser,
        shape: &[i64],
        kind: Kind,
        device: Device,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        self.initial(denoiser, &rng.normal(shape, kind, device))
    }

    /// Whether the run ends with the final denoise at `σ(t_T)` (VE only, docs/method.md §4.1).
    pub fn final_denoise(&self) -> bool {
        !self.vp
    }

    /// The factor turning a VP state increment into a VE one for a step `σ_t → σ_s`: `1/√(ᾱ_t ᾱ_s)` =
    /// `√((1 + σ_t²)(1 + σ_s²))` with a gradient taken in VE units (DPS, docs/method.md §5.3); 1 for a VE prior.
    pub fn dps_weight(&self, sigma_t: f64, sigma_s: f64) -> f64 {
        if self.vp {
            ((1.0 + sigma_t * sigma_t) * (1.0 + sigma_s * sigma_s)).sqrt()
        } else {
            1.0
        }
    }
}
