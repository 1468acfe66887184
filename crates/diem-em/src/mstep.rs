//! The M-step (docs/method.md §8): train the denoiser on the (filtered) E-step samples, continuing from the current
//! weights with a fresh optimizer and a restarted EMA; with an EMA the model ends at the EMA weights.

use std::rc::Rc;

use diem_models::{
    Ema, GradientReducer, PriorModel, ProgressObserver, Schedule, TrainConfig, TrainReport, Trainer,
};
use tch::{Kind, Tensor};

use crate::error::{EmError, Result};
use crate::seed::torch_seed;

/// Serializes the users of libtorch's global generator inside this crate (M-steps, model initialization).
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Keeps the samples whose every coordinate lies strictly inside `(−bound, bound)` (docs/method.md §9a); non-finite
/// samples are always dropped. Returns the kept samples (`[S', ...]`).
pub fn filter_samples(samples: &Tensor, bound: Option<f64>) -> Tensor {
    let n = samples.size()[0];
    let flat = samples.reshape([n, -1]);
    let mut keep = flat.isfinite().all_dim(1, false);
    if let Some(b) = bound {
        let inside = flat.abs().lt(b).all_dim(1, false);
        keep = keep.logical_and(&inside);
    }
    let idx = keep.nonzero().squeeze_dim(1);
    samples.index_select(0, &idx)
}

/// Trains `model` on `data` (`[S, ..x_shape]`) for one lap: seeds libtorch's generator with `seed` (batch
/// indices, diffusion times, noise), builds a fresh [`Trainer`] (Adam state, learning-rate schedule and EMA
/// restart) and, when an EMA is configured, copies the EMA weights into the model at the end (docs/method.md §8,
/// §12.2 "EMA bookkeeping"). Returns the loss curve and the EMA.
///
/// # Errors
/// [`EmError::Models`] when training fails (empty data, batch larger than the data with epochs).
pub fn m_step(
    model: &PriorModel,
    data: &Tensor,
    config: &TrainConfig,
    seed: u64,
    lap: usize,
) -> Result<(TrainReport, Option<Ema>)> {
    let (report, ema, _) = m_step_validated(model, data, None, config, seed, lap)?;
    Ok((report, ema))
}

/// One validation loss of an M-step: the training loss (docs/method.md §3.3) of the EMA weights (the live weights
/// without an EMA) on the lap's validation posterior samples, with noise levels and noise fixed for the lap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValidationRecord {
    /// Optimizer steps done when it was taken.
    pub step: usize,
    /// The loss.
    pub loss: f64,
}

/// [`m_step`] with a validation loss every `config.log_every` steps and after the last step (docs/method.md §8:
/// with `log_every` = the steps of one epoch, once per epoch as the authors' code).
///
/// `validation = (samples [V, ..x_shape], seed)`: the lap's validation posterior samples and the seed of the
/// loss's fixed noise levels `σ(t)`, `t ~ config.time`, and noise `z` (drawn once, before training, so the
/// training's random stream is the one [`m_step`] uses). Without validation it is [`m_step`].
///
/// # Errors
/// As [`m_step`]; [`EmError::Models`] when the validation samples do not fit the network.
pub fn m_step_validated(
    model: &PriorModel,
    data: &Tensor,
    validation: Option<(&Tensor, u64)>,
    config: &TrainConfig,
    seed: u64,
    lap: usize,
) -> Result<(TrainReport, Option<Ema>, Vec<ValidationRecord>)> {
    m_step_parallel(model, data, validation, config, seed, lap, None)
}

/// [`m_step_validated`] as one rank of a data-parallel group: with `parallel = Some((reducer, b))` this
/// rank draws `b` samples per step from its own `data` with its own `seed`, and `reducer` averages the
/// gradients over the ranks before clipping ([`Trainer::with_gradient_reducer`]; see [`crate::dist`]).
/// With `None` it is [`m_step_validated`].
///
/// # Errors
/// As [`m_step_validated`]; an error of the group when another rank's step failed.
pub fn m_step_parallel(
    model: &PriorModel,
    data: &Tensor,
    validation: Option<(&Tensor, u64)>,
    config: &TrainConfig,
    seed: u64,
    lap: usize,
    parallel: Option<(Box<dyn GradientReducer>, i64)>,
) -> Result<(TrainReport, Option<Ema>, Vec<ValidationRecord>)> {
    m_step_observed(model, data, validation, config, seed, lap, parallel, None)
}

/// [`m_step_parallel`] reporting its steps to `progress` (one task named "lap L: M-step steps"; `None`: the
/// terminal display `config.progress` asks for).
///
/// # Errors
/// As [`m_step_parallel`].
#[allow(clippy::too_many_arguments)]
pub fn m_step_observed(
    model: &PriorModel,
    data: &Tensor,
    validation: Option<(&Tensor, u64)>,
    config: &TrainConfig,
    seed: u64,
    lap: usize,
    parallel: Option<(Box<dyn GradientReducer>, i64)>,
    progress: Option<Rc<dyn ProgressObserver>>,
) -> Result<(TrainReport, Option<Ema>, Vec<ValidationRecord>)> {
    if data.size()[0] == 0 {
        return Err(EmError::EmptyTrainingSet { lap, total: 0 });
    }
    // libtorch's generator is process-global: hold the lock for the whole M-step so that concurrent M-steps
    // in one process (several runs on threads) cannot interleave their draws.
    let _rng = TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let fixed = match validation {
        Some((x, vseed)) if x.size().first().is_some_and(|&v| v > 0) => {
            tch::manual_seed(torch_seed(vseed));
            let x = x.to_kind(Kind::Float);
            let t = config.time.sample(x.size()[0], x.device());
            let sigma = config.schedule.sigma(&t).to_kind(Kind::Float);
            let z = x.randn_like();
            Some((x, sigma, z))
        }
        _ => None,
    };
    tch::manual_seed(torch_seed(seed));
    // The data stay where they are (host memory with `DataStorage::Host`): the trainer moves each batch.
    let data = data.to_kind(Kind::Float);
    let device = model.var_store().device();
    let mut trainer =
        Trainer::new(model.var_store(), config.clone())?.with_label(format!("lap {lap}: M-step steps"));
    if let Some(observer) = progress {
        trainer = trainer.with_progress(observer);
    }
    if let Some((reducer, local_batch)) = parallel {
        trainer = trainer.with_gradient_reducer(reducer, local_batch)?;
    }
    let mut records = Vec::new();
    let report = match &fixed {
        None => trainer.fit(model.denoiser(), &data)?,
        Some((x, sigma, z)) => {
            let every = config.log_every.max(1);
            trainer.fit_with(model.denoiser(), &data, every, &mut |step, t| {
                let loss = t.with_ema_weights(|| {
                    model.denoiser().mean_loss(x, sigma, z, config.batch_size, device)
                })?;
                records.push(ValidationRecord { step, loss });
                Ok(())
            })?
        }
    };
    let ema = trainer.into_ema();
    if let Some(e) = &ema {
        e.copy_to_model();
    }
    Ok((report, ema, records))
}

/// The mean and the standard deviation of the losses of a loss curve.
pub fn loss_summary(report: &TrainReport) -> (f64, f64) {
    let v: Vec<f64> = report.records.iter().map(|r| r.loss).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}
