//! The M-step (SPEC.md §8): train the denoiser on the (filtered) E-step samples, continuing from the current
//! weights with a fresh optimizer and a restarted EMA; with an EMA the model ends at the EMA weights.

use diem_models::{Ema, PriorModel, TrainConfig, TrainReport, Trainer};
use tch::{Kind, Tensor};

use crate::error::{EmError, Result};
use crate::seed::torch_seed;

/// Serializes the users of libtorch's global generator inside this crate (M-steps, model initialization).
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Keeps the samples whose every coordinate lies strictly inside `(−bound, bound)` (SPEC.md §9a); non-finite
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
/// restart) and, when an EMA is configured, copies the EMA weights into the model at the end (SPEC.md §8,
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
    if data.size()[0] == 0 {
        return Err(EmError::EmptyTrainingSet { lap, total: 0 });
    }
    // libtorch's generator is process-global: hold the lock for the whole M-step so that concurrent M-steps
    // in one process (several runs on threads) cannot interleave their draws.
    let _rng = TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(torch_seed(seed));
    // The data stay where they are (host memory with `DataStorage::Host`): the trainer moves each batch.
    let data = data.to_kind(Kind::Float);
    let mut trainer = Trainer::new(&model.vs, config.clone())?;
    let report = trainer.fit(&model.denoiser, &data)?;
    let ema = trainer.into_ema();
    if let Some(e) = &ema {
        e.copy_to_model();
    }
    Ok((report, ema))
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
