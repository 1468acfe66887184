//! Training a denoiser on clean samples (the M-step, docs/method.md §3.3, §8): the DSM loss with
//! `λ(σ) = 1/σ² + 1` at `t ~ Beta(3, 3)`, Adam, global-norm gradient clipping, learning-rate schedules,
//! an EMA of the weights, image augmentations, a progress bar and a logged loss curve.
//!
//! The optimizer is libtorch's Adam through [`tch::nn::Optimizer`] (β1 = 0.9, β2 = 0.999, ε = 1e-8 by
//! default; `weight_decay` is PyTorch's coupled L2 term, or AdamW's decoupled decay with `decoupled`).
//! Gradients are clipped to a global norm before each Adam step, without a host synchronization.
//! [`AdamConfig::fused`] opts into the same Adam and clipping over one flat buffer (fewer kernels per step;
//! not bit-identical to the default).

mod augment;
mod ema;
mod flat_adam;
mod lr;

pub use augment::{adjust_hue_saturation, hsv_to_rgb, pad_and_crop, rgb_to_hsv, AugmentConfig};
pub use ema::Ema;
pub use lr::{LrConfig, LrSchedule};

use std::io::Write;
use std::path::Path;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::edm::{EdmDenoiser, NoiseConditionalNet};
use crate::error::{Error, Result};
use crate::progress::{ProgressObserver, ProgressTask, TerminalProgress};
use crate::schedule::{Schedule, VeSchedule};

/// Adam's hyper-parameters (docs/method.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Weight decay (0 = none, the default of every experiment).
    pub weight_decay: f64,
    /// Decoupled (AdamW) weight decay instead of PyTorch Adam's L2 term.
    #[serde(default)]
    pub decoupled: bool,
    /// Opt-in: Adam and the gradient clipping over one flat buffer holding every variable, a dozen kernels per
    /// step whatever the number of tensors, instead of libtorch's per-tensor Adam (the default, which the
    /// recorded runs used). The same algorithm but not bit-identical (interpolated moment updates, one norm
    /// reduction); `BENCHMARKS.md` ("The M-step side by side") has both timings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fused: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, fused: false }
    }
}

/// The distribution of the diffusion times `t ∈ [0, 1]` of the loss (docs/method.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeDistribution {
    /// `t ~ Beta(alpha, beta)`; the paper uses Beta(3, 3).
    Beta {
        /// First shape parameter.
        alpha: f64,
        /// Second shape parameter.
        beta: f64,
    },
    /// `t ~ U(0, 1)`.
    Uniform,
}

impl TimeDistribution {
    /// Draws `n` times on `device` (f32), from libtorch's global generator.
    pub fn sample(&self, n: i64, device: tch::Device) -> Tensor {
        match *self {
            Self::Beta { alpha, beta } => {
                let ga = Tensor::full([n], alpha, (Kind::Float, device)).internal_standard_gamma();
                let gb = Tensor::full([n], beta, (Kind::Float, device)).internal_standard_gamma();
                &ga / (&ga + gb)
            }
            Self::Uniform => Tensor::rand([n], (Kind::Float, device)),
        }
    }
}

/// How batches are drawn from the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    /// Indices drawn uniformly with replacement (manifold, docs/method.md §8).
    WithReplacement,
    /// Shuffled epochs; the last partial batch of each epoch is dropped (CIFAR, MRI).
    Epochs,
}

/// Everything about one training run (one M-step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps S.
    pub steps: usize,
    /// Batch size.
    pub batch_size: i64,
    /// Learning rate and its schedule over the S steps.
    pub lr: LrConfig,
    /// Adam's hyper-parameters.
    pub adam: AdamConfig,
    /// Global-norm gradient clipping before Adam (docs/method.md §8: 1.0); `None` = off.
    pub clip_norm: Option<f64>,
    /// EMA decay (CIFAR 0.9999, MRI 0.999); `None` = no EMA.
    pub ema_decay: Option<f64>,
    /// The noise schedule whose σ(t) the loss uses.
    pub schedule: VeSchedule,
    /// The distribution of t.
    pub time: TimeDistribution,
    /// How batches are drawn.
    pub batching: Batching,
    /// Image augmentations (for `[N, C, H, W]` data).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Record the mean loss every this many steps (≥ 1).
    pub log_every: usize,
    /// Show the training's progress (in a terminal or as log lines: [`TerminalProgress`]) when no observer
    /// is given ([`Trainer::with_progress`]).
    pub progress: bool,
}

impl TrainConfig {
    /// The manifold M-step (docs/method.md §9a): 65,536 steps, batch 1024, lr 1e-3 → 1e-6 linear, clip 1, no EMA,
    /// schedule (1e-3, 1e1), Beta(3, 3), indices with replacement.
    pub fn manifold() -> Self {
        Self {
            steps: 65_536,
            batch_size: 1024,
            lr: LrConfig::linear(1e-3, 1e-6),
            adam: AdamConfig::default(),
            clip_norm: Some(1.0),
            ema_decay: None,
            schedule: VeSchedule::manifold(),
            time: TimeDistribution::Beta { alpha: 3.0, beta: 3.0 },
            batching: Batching::WithReplacement,
            augment: AugmentConfig::default(),
            log_every: 256,
            progress: false,
        }
    }

    /// The CIFAR-10 M-step (docs/method.md §9b) for `steps` steps: batch 256, constant lr 2e-4, clip 1, EMA 0.9999,
    /// schedule (1e-3, 1e2), shuffled epochs, flip + hue + saturation.
    pub fn cifar(steps: usize) -> Self {
        Self {
            steps,
            batch_size: 256,
            lr: LrConfig::constant(2e-4),
            ema_decay: Some(0.9999),
            schedule: VeSchedule::default(),
            batching: Batching::Epochs,
            augment: AugmentConfig::cifar(),
            ..Self::manifold()
        }
    }

    /// The MRI M-step (docs/method.md §9c) for `steps` steps: batch 256, constant lr 1e-4, EMA 0.999, flip + ±4 px.
    pub fn mri(steps: usize) -> Self {
        Self {
            lr: LrConfig::constant(1e-4),
            ema_decay: Some(0.999),
            augment: AugmentConfig::mri(),
            ..Self::cifar(steps)
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 1 {
            return Err(Error::config("batch_size", format!("must be ≥ 1, got {}", self.batch_size)));
        }
        if self.log_every == 0 {
            return Err(Error::config("log_every", "must be ≥ 1"));
        }
        self.lr.validate()?;
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config("clip_norm", format!("must be finite and > 0, got {c}")));
            }
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::config("ema_decay", format!("must lie in [0, 1), got {d}")));
            }
        }
        let a = &self.adam;
        if !((0.0..1.0).contains(&a.beta1)
            && (0.0..1.0).contains(&a.beta2)
            && a.eps > 0.0
            && a.weight_decay >= 0.0)
        {
            return Err(Error::config(
                "adam",
                format!("needs 0 ≤ β1, β2 < 1, ε > 0, weight_decay ≥ 0; got {a:?}"),
            ));
        }
        if let TimeDistribution::Beta { alpha, beta } = self.time {
            if !(alpha > 0.0 && beta > 0.0) {
                return Err(Error::config(
                    "time.beta",
                    format!("shape parameters must be > 0, got ({alpha}, {beta})"),
                ));
            }
        }
        self.schedule.validate()?;
        self.augment.validate()
    }
}

/// One point of the loss curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    /// The last step (0-based) of the window.
    pub step: usize,
    /// Mean training loss over the window.
    pub loss: f64,
    /// Mean global gradient norm (before clipping) over the window.
    pub grad_norm: f64,
    /// Learning rate at the window's last step.
    pub lr: f64,
}

/// What a training run logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The loss curve, one record per `log_every` steps (plus a last partial window).
    pub records: Vec<LossRecord>,
}

impl TrainReport {
    /// Writes the loss curve as JSON lines (one [`LossRecord`] per line), atomically (temp file + rename).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        for r in &self.records {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Json { path: path.into(), source: e })?;
            buf.write_all(b"\n").map_err(|e| Error::Io { path: path.into(), source: e })?;
        }
        crate::checkpoint::write_atomic(path, &buf)
    }
}

/// Averages gradients across the ranks of a data-parallel group, between the backward pass and clipping, so
/// that clipping, Adam and the EMA see identical gradients on every rank (the `diem-em` crate implements it
/// over `diem-dist`'s collectives).
///
/// Every rank calls [`GradientReducer::reduce`] exactly once per optimizer step, with the gradients of every
/// trainable variable in the same order, even when its own step failed: then `failed` is true (its
/// gradients are zeros), and every rank must return an error, so that the group stops together instead of
/// leaving ranks waiting in a collective.
pub trait GradientReducer {
    /// Replaces `grads` in place by their average over the group (each rank's gradient being the mean over
    /// its local batch, weighted by its share of the global batch).
    ///
    /// # Errors
    /// When any rank reports `failed`, or the collective fails.
    fn reduce(&mut self, grads: &mut [Tensor], failed: bool) -> Result<()>;
}

/// The M-step trainer: Adam on the variables of one [`nn::VarStore`], fresh at construction (docs/method.md §8: the
/// optimizer, its learning-rate schedule and the EMA restart every lap).
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    opt: nn::Optimizer,
    /// The flat optimizer when [`AdamConfig::fused`]; `opt` then only resets the gradients.
    flat: Option<flat_adam::FlatAdam>,
    params: Vec<Tensor>,
    ema: Option<Ema>,
    step: usize,
    order: Option<(Tensor, i64)>,
    /// The variables' device: every batch moves there (the data may live in host memory).
    device: tch::Device,
    /// Data-parallel training: the gradient averaging across ranks, and this rank's batch size.
    parallel: Option<(Box<dyn GradientReducer>, i64)>,
    /// The progress display's name.
    label: String,
    /// Where progress goes; `None`: a [`TerminalProgress`] shown when `config.progress`.
    progress: Option<Rc<dyn ProgressObserver>>,
}

impl std::fmt::Debug for dyn GradientReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GradientReducer")
    }
}

impl Trainer {
    /// A trainer for the trainable variables of `vs`; the EMA (if configured) starts at their current values.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::Torch`] if libtorch refuses the optimizer.
    pub fn new(vs: &nn::VarStore, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let a = config.adam;
        let lr0 = config.lr.at(0, config.steps);
        let opt = if a.decoupled {
            nn::AdamW { beta1: a.beta1, beta2: a.beta2, wd: a.weight_decay, eps: a.eps, amsgrad: false }
                .build(vs, lr0)?
        } else {
            nn::Adam { beta1: a.beta1, beta2: a.beta2, wd: a.weight_decay, eps: a.eps, amsgrad: false }
                .build(vs, lr0)?
        };
        let ema = config.ema_decay.map(|d| Ema::new(vs, d)).transpose()?;
        let params = vs.trainable_variables();
        let flat = if a.fused { Some(flat_adam::FlatAdam::new(&params, a)?) } else { None };
        Ok(Self {
            params,
            config,
            opt,
            flat,
            ema,
            step: 0,
            order: None,
            device: vs.device(),
            parallel: None,
            label: "M-step steps".into(),
            progress: None,
        })
    }

    /// Names the progress display ("lap 3: M-step steps"), as its log lines show it without a terminal.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Reports the training's progress to `observer` (one task of `config.steps` steps named by the label,
    /// with the last logged loss as its message) instead of the terminal display `config.progress` asks for.
    pub fn with_progress(mut self, observer: Rc<dyn ProgressObserver>) -> Self {
        self.progress = Some(observer);
        self
    }

    /// Data-parallel training: this rank draws batches of `local_batch` samples from its own data (the
    /// global batch `config.batch_size` is the sum of the ranks' local batches), and `reducer` averages the
    /// gradients across the ranks after every backward pass, before clipping.
    ///
    /// # Errors
    /// [`Error::Config`] unless `1 ≤ local_batch ≤ config.batch_size`.
    pub fn with_gradient_reducer(
        mut self,
        reducer: Box<dyn GradientReducer>,
        local_batch: i64,
    ) -> Result<Self> {
        if !(1..=self.config.batch_size).contains(&local_batch) {
            return Err(Error::config(
                "batch_size",
                format!(
                    "the local batch {local_batch} of a data-parallel rank must lie in 1..={} (the global \
                     batch); use fewer ranks or a larger batch",
                    self.config.batch_size
                ),
            ));
        }
        self.parallel = Some((reducer, local_batch));
        Ok(self)
    }

    /// The number of samples this trainer draws per step: the batch size, or this rank's local batch.
    pub fn local_batch_size(&self) -> i64 {
        self.parallel.as_ref().map_or(self.config.batch_size, |p| p.1)
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The EMA of the weights, if configured.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// Consumes the trainer, returning the EMA.
    pub fn into_ema(self) -> Option<Ema> {
        self.ema
    }

    /// Runs `f` with the EMA weights in the model (the live weights when there is no EMA), then restores the
    /// live weights: how a validation loss "with the EMA weights" is taken in the middle of a lap (docs/method.md §8).
    pub fn with_ema_weights<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.ema {
            Some(ema) => {
                ema.swap_with_model();
                let r = f();
                ema.swap_with_model();
                r
            }
            None => f(),
        }
    }

    /// The learning rate of the next step (docs/method.md §8).
    pub fn current_lr(&self) -> f64 {
        self.config.lr.at(self.step, self.config.steps)
    }

    /// One optimizer step on a batch of clean samples `x: [B, ...]` (already augmented): draws `t`, `σ(t)` and
    /// `z`, computes the DSM loss in training mode (dropout on), back-propagates, clips the global gradient
    /// norm, sets the scheduled learning rate, steps Adam and updates the EMA.
    ///
    /// Returns the loss and the gradient norm before clipping, as scalar tensors (no host synchronization).
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` has no batch dimension.
    pub fn train_step<Net: NoiseConditionalNet>(
        &mut self,
        denoiser: &EdmDenoiser<Net>,
        x: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let size = x.size();
        if size.is_empty() || size[0] < 1 {
            return Err(Error::shape("training batch", "[B, ...] with B ≥ 1", &size));
        }
        let b = size[0];
        self.opt.set_lr(self.current_lr());
        self.opt.zero_grad();
        let local = (|| -> Result<Tensor> {
            let t = self.config.time.sample(b, x.device());
            let sigma = self.config.schedule.sigma(&t).to_kind(x.kind());
            let z = x.randn_like();
            let loss = denoiser.loss(x, &sigma, &z, true)?;
            loss.f_backward()?;
            Ok(loss)
        })();
        if let Some((reducer, _)) = &mut self.parallel {
            let failed = local.is_err();
            let mut grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if failed || !g.defined() {
                        p.zeros_like()
                    } else {
                        g
                    }
                })
                .collect();
            let reduced = tch::no_grad(|| reducer.reduce(&mut grads, failed));
            // The failing rank reports its own error; the others report the group's.
            let loss = local?;
            reduced?;
            return Ok(self.clip_and_step(loss, x.device()));
        }
        let loss = local?;
        Ok(self.clip_and_step(loss, x.device()))
    }

    /// Clips the global gradient norm, steps Adam and updates the EMA (the second half of
    /// [`Trainer::train_step`]); returns the detached loss and the norm before clipping.
    fn clip_and_step(&mut self, loss: Tensor, device: tch::Device) -> (Tensor, Tensor) {
        if let Some(flat) = &mut self.flat {
            let norm = flat.gather_and_clip(self.config.clip_norm);
            flat.step(self.config.lr.at(self.step, self.config.steps));
            if let Some(ema) = &mut self.ema {
                ema.update();
            }
            self.step += 1;
            return (loss.detach(), norm);
        }
        let norm = tch::no_grad(|| {
            let squares: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.square().sum(Kind::Float))
                .collect();
            let norm = if squares.is_empty() {
                Tensor::zeros([], (Kind::Float, device))
            } else {
                Tensor::stack(&squares, 0).sum(Kind::Float).sqrt()
            };
            if let Some(max) = self.config.clip_norm {
                // coef = min(max / (‖g‖ + 1e-6), 1), as torch.nn.utils.clip_grad_norm_.
                let coef = ((&norm + 1e-6).reciprocal() * max).clamp_max(1.0);
                for p in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_(&coef.to_kind(g.kind()));
                    }
                }
            }
            norm
        });
        self.opt.step();
        if let Some(ema) = &mut self.ema {
            ema.update();
        }
        self.step += 1;
        (loss.detach(), norm)
    }

    /// The next batch of indices into a data set of `n` samples.
    fn next_indices(&mut self, n: i64, device: tch::Device) -> Result<Tensor> {
        let b = self.local_batch_size();
        match self.config.batching {
            Batching::WithReplacement => Ok(Tensor::randint(n, [b], (Kind::Int64, device))),
            Batching::Epochs => {
                if n < b {
                    return Err(Error::config(
                        "batch_size",
                        format!("{b} exceeds the {n} training samples (epochs drop partial batches)"),
                    ));
                }
                let (perm, pos) = match self.order.take() {
                    Some((perm, pos)) if pos + b <= n && perm.size()[0] == n => (perm, pos),
                    _ => (Tensor::randperm(n, (Kind::Int64, device)), 0),
                };
                let idx = perm.narrow(0, pos, b);
                self.order = Some((perm, pos + b));
                Ok(idx)
            }
        }
    }

    /// Trains for the configured number of steps on `data: [S, ...]`, returning the loss curve. The data may
    /// live on another device than the model (e.g. host memory for a data set larger than the GPU): batches
    /// are drawn where the data are and moved to the model's device one at a time. Randomness comes from libtorch's global generator: call `tch::manual_seed` first for a
    /// reproducible run.
    ///
    /// # Errors
    /// [`Error::Shape`] for empty data or data that the augmentations cannot take; [`Error::Config`] when a
    /// batch does not fit the data.
    pub fn fit<Net: NoiseConditionalNet>(
        &mut self,
        denoiser: &EdmDenoiser<Net>,
        data: &Tensor,
    ) -> Result<TrainReport> {
        self.fit_with(denoiser, data, 0, &mut |_, _| Ok(()))
    }

    /// [`Trainer::fit`] with a hook called after every `every` steps and after the last one (never when
    /// `every` is 0), with the number of steps done and the trainer (e.g. for a validation loss through
    /// [`Trainer::with_ema_weights`] and [`EdmDenoiser::mean_loss`]). An error from the hook stops training.
    ///
    /// # Errors
    /// As [`Trainer::fit`], and the hook's errors.
    pub fn fit_with<Net: NoiseConditionalNet>(
        &mut self,
        denoiser: &EdmDenoiser<Net>,
        data: &Tensor,
        every: usize,
        hook: &mut dyn FnMut(usize, &Trainer) -> Result<()>,
    ) -> Result<TrainReport> {
        let size = data.size();
        if size.is_empty() || size[0] < 1 {
            return Err(Error::shape("training data", "[S, ...] with S ≥ 1", &size));
        }
        let total = self.config.steps;
        let observer: Rc<dyn ProgressObserver> = match &self.progress {
            Some(p) => p.clone(),
            None => Rc::new(TerminalProgress::new(self.config.progress)),
        };
        let task = ProgressTask::start(&*observer, &self.label, total as u64);
        let mut report = TrainReport::default();
        let mut window: Vec<(Tensor, Tensor)> = Vec::with_capacity(self.config.log_every);
        let flush = |window: &mut Vec<(Tensor, Tensor)>, step: usize, lr: f64, report: &mut TrainReport| {
            if window.is_empty() {
                return;
            }
            let losses: Vec<Tensor> = window.iter().map(|w| w.0.to_kind(Kind::Double)).collect();
            let norms: Vec<Tensor> = window.iter().map(|w| w.1.to_kind(Kind::Double)).collect();
            let loss = Tensor::stack(&losses, 0).mean(Kind::Double).double_value(&[]);
            let grad_norm = Tensor::stack(&norms, 0).mean(Kind::Double).double_value(&[]);
            report.records.push(LossRecord { step, loss, grad_norm, lr });
            window.clear();
        };
        for s in 0..total {
            let idx = self.next_indices(size[0], data.device())?;
            let mut batch = data.index_select(0, &idx);
            if batch.device() != self.device {
                batch = batch.to_device(self.device);
            }
            if self.config.augment.is_active() {
                batch = self.config.augment.apply(&batch)?;
            }
            let lr = self.current_lr();
            window.push(self.train_step(denoiser, &batch)?);
            if window.len() == self.config.log_every || s + 1 == total {
                flush(&mut window, s, lr, &mut report);
                if let Some(r) = report.records.last() {
                    task.message(&format!("loss {:.4e}", r.loss));
                }
            }
            task.advance(1);
            if every > 0 && ((s + 1) % every == 0 || s + 1 == total) {
                hook(s + 1, self)?;
            }
        }
        task.finish();
        Ok(report)
    }
}
