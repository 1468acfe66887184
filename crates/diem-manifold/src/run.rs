//! [`run_experiment`]: data, run directory, EM laps and report in one call.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Device;

use crate::config::ManifoldConfig;
use crate::data::ManifoldData;
use crate::error::{ManifoldError, Result};
use crate::observer::ManifoldObserver;
use crate::report::{write_report, LapRecord, REPORT_FILE};
use diem_em::layout::is_run_dir;
use diem_em::run::EmRun;

/// The file holding the experiment's [`ManifoldConfig`] in the run directory (next to the EM `config.json`).
pub const MANIFOLD_CONFIG_FILE: &str = "manifold.json";

/// How [`run_experiment`] treats an existing run directory, and where it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Resume a run found in the output directory (with the configuration stored there).
    pub resume: bool,
    /// Delete a run found in the output directory and start over (takes precedence over `resume`).
    pub overwrite: bool,
    /// The device of the run.
    pub device: Device,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { resume: false, overwrite: false, device: Device::Cpu }
    }
}

/// What [`run_experiment`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSummary {
    /// The report's path.
    pub report: PathBuf,
    /// The evaluated priors: the Gaussian (lap −1) and every lap.
    pub records: Vec<LapRecord>,
    /// Wall time of this call in seconds (data generation included).
    pub seconds: f64,
}

/// Runs the manifold experiment of `config` in `out` (docs/method.md §9a): generates the data, creates the EM run
/// (or resumes it, see [`RunOptions`]), evaluates the initial Gaussian and every lap with a
/// [`ManifoldObserver`], and writes `report.md`.
///
/// # Errors
/// [`ManifoldError::Config`] for an invalid configuration or when `out` already holds a run and neither
/// `resume` nor `overwrite` is set; IO errors naming the path; EM, sampling, metric and plot errors.
pub fn run_experiment(
    config: &ManifoldConfig,
    out: &Path,
    options: &RunOptions,
) -> Result<ExperimentSummary> {
    let start = Instant::now();
    let existing = is_run_dir(out);
    if existing && options.overwrite {
        std::fs::remove_dir_all(out).map_err(|e| ManifoldError::io(out, e))?;
    } else if existing && !options.resume {
        return Err(ManifoldError::config(
            "out",
            format!("{} already holds a run: resume it or overwrite it", out.display()),
        ));
    }
    let resuming = existing && !options.overwrite;
    let config = if resuming { stored_config(out)? } else { config.clone() };
    config.validate()?;
    let data = ManifoldData::generate(&config.data, config.metric.points, options.device)?;
    let observations = data.observation.clone();
    let mut run = if resuming {
        EmRun::resume(out, observations, options.device)?
    } else {
        let run = EmRun::create(out, config.em.clone(), observations, options.device)?;
        let text = serde_json::to_string_pretty(&config)
            .map_err(|source| ManifoldError::Json { path: out.join(MANIFOLD_CONFIG_FILE), source })?;
        diem_em::io::write_atomic(&out.join(MANIFOLD_CONFIG_FILE), text.as_bytes())?;
        run
    };
    let observer = ManifoldObserver::new(&config, &data, out)?;
    let records = std::rc::Rc::new(std::cell::RefCell::new(observer.records().to_vec()));
    run.add_observer(Box::new(Recording { inner: observer, records: records.clone() }));
    run.run()?;
    let records = records.borrow().clone();
    let total = records.iter().map(|r| r.wall_seconds).sum();
    write_report(out, &config, &records, total)?;
    Ok(ExperimentSummary { report: out.join(REPORT_FILE), records, seconds: start.elapsed().as_secs_f64() })
}

/// Reads the [`ManifoldConfig`] a run was created with.
///
/// # Errors
/// IO or JSON errors naming the file.
pub fn stored_config(out: &Path) -> Result<ManifoldConfig> {
    let path = out.join(MANIFOLD_CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| ManifoldError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| ManifoldError::Json { path, source })
}

/// Forwards to the [`ManifoldObserver`] and mirrors its records, so [`run_experiment`] can return them.
struct Recording {
    inner: ManifoldObserver,
    records: std::rc::Rc<std::cell::RefCell<Vec<LapRecord>>>,
}

impl diem_em::observer::LapObserver for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn on_gaussian(
        &mut self,
        run_dir: &Path,
        prior: &diem_em::gaussian::GaussianPrior,
    ) -> diem_em::Result<()> {
        self.inner.on_gaussian(run_dir, prior)?;
        *self.records.borrow_mut() = self.inner.records().to_vec();
        Ok(())
    }

    fn on_lap(&mut self, ctx: &mut diem_em::observer::LapContext<'_>) -> diem_em::Result<()> {
        self.inner.on_lap(ctx)?;
        *self.records.borrow_mut() = self.inner.records().to_vec();
        Ok(())
    }
}
