//! Where an [`EmLoop`]'s steps are recorded: the [`RunStore`] trait, the persistence seam of DiEM.
//!
//! [`EmLoop::run_with`] calls the store after each step of Algorithm 1 (the Gaussian fit, the initial
//! samples, every lap): rank 0 saves what the step produced, then every rank commits the new
//! [`LoopState`]. A step counts as done only once its commit succeeded, so a store that writes files can
//! make the commit its crash-safe point (the run directory of [`crate::EmRun`] writes `state.bin` there and
//! resumes after the last commit). [`NoStore`] records nothing: the loop in memory.

use diem_models::PriorModel;
use tch::Tensor;

use crate::dist::sync;
use crate::emloop::{EmLoop, LapOutcome, LoopState};
use crate::error::Result;
use crate::gaussian::GaussianPrior;

/// What a store holds of its last committed step: where a loop continues from ([`EmLoop::resume_from`]).
#[derive(Debug)]
pub struct Restored {
    /// The steps committed.
    pub state: LoopState,
    /// The current Gaussian prior, once fitted.
    pub gaussian: Option<GaussianPrior>,
    /// The model after the last committed lap (`None` before the first lap: the loop creates it from its
    /// seed).
    pub model: Option<PriorModel>,
    /// This rank's share of the latest committed E-step samples.
    pub samples: Option<Tensor>,
}

/// Records the steps of an [`EmLoop`] (module docs). The `save_*` methods run on rank 0 only; `commit` runs
/// on every rank, with rank 0's save result (`Ok(())` elsewhere), and must fail on every rank when it failed
/// on any ([`crate::dist::sync`]).
pub trait RunStore {
    /// Saves the fitted Gaussian initial prior `prior` (`em` still holds the previous state).
    ///
    /// # Errors
    /// Whatever the store reports.
    fn save_gaussian(&mut self, em: &EmLoop, prior: &GaussianPrior) -> Result<()>;

    /// Saves the initial E-step samples of [`crate::LapOrder::TrainThenSample`] (every rank's, gathered).
    ///
    /// # Errors
    /// Whatever the store reports.
    fn save_initial_samples(&mut self, em: &EmLoop, samples: &Tensor) -> Result<()>;

    /// Saves a lap: `em` holds the model just trained and the current Gaussian; `outcome` what the lap
    /// produced (with every rank's samples in [`LapOutcome::gathered`]).
    ///
    /// # Errors
    /// Whatever the store reports.
    fn save_lap(&mut self, em: &EmLoop, outcome: &LapOutcome) -> Result<()>;

    /// The commit point: the step that leads to `next` is done once this returns `Ok`. `written` is rank 0's
    /// save result.
    ///
    /// # Errors
    /// `written`'s error (on every rank), or the store's own.
    fn commit(&mut self, em: &EmLoop, written: Result<()>, next: LoopState) -> Result<()>;

    /// The last committed step, on every rank (this rank's share of the samples), for `em` to continue from;
    /// `None` when the store holds nothing to continue from (the default).
    ///
    /// # Errors
    /// Whatever the store reports (a missing or corrupt file).
    fn load_latest(&mut self, _em: &EmLoop) -> Result<Option<Restored>> {
        Ok(None)
    }
}

/// The store that records nothing: [`EmLoop::run_with`] in memory. Its commit only agrees the ranks'
/// outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl RunStore for NoStore {
    fn save_gaussian(&mut self, _em: &EmLoop, _prior: &GaussianPrior) -> Result<()> {
        Ok(())
    }

    fn save_initial_samples(&mut self, _em: &EmLoop, _samples: &Tensor) -> Result<()> {
        Ok(())
    }

    fn save_lap(&mut self, _em: &EmLoop, _outcome: &LapOutcome) -> Result<()> {
        Ok(())
    }

    fn commit(&mut self, em: &EmLoop, written: Result<()>, _next: LoopState) -> Result<()> {
        sync(em.communicator(), written)
    }
}
