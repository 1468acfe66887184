//! [`run_experiment`]: data, observations, run directory, EM laps, evaluation and report in one call.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use diem_dist::{Communicator, Single};
use diem_em::dist::{agreed, on_root};
use diem_em::layout::{is_run_dir, METRICS_FILE};
use diem_em::EmRun;
use serde_json::Value;
use tch::Device;

use crate::config::CifarConfig;
use crate::download::{download_archive, DownloadOptions};
use crate::error::{CifarError, Result};
use crate::fid::FidEvaluator;
use crate::format::{CifarSource, ARCHIVE_NAME};
use crate::observer::CifarObserver;
use crate::prepare::{load_prepared, prepare, PrepareConfig, PrepareSummary};
use crate::report::{write_report, REPORT_FILE};
use crate::synthetic::{write_synthetic, SyntheticSpec};

/// The file holding the experiment's [`CifarConfig`] in the run directory (next to the EM `config.json`).
pub const CIFAR_CONFIG_FILE: &str = "cifar.json";
/// The synthetic data set's folder inside the run directory (`tiny` and `micro` presets).
pub const SYNTHETIC_DIR: &str = "data";

/// Where the data come from, how an existing run directory is treated, and where the run computes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Resume a run found in the output directory (with the configuration stored there).
    pub resume: bool,
    /// Delete a run found in the output directory and start over (takes precedence over `resume`).
    pub overwrite: bool,
    /// The device of the run.
    pub device: Device,
    /// The folder holding the CIFAR-10 archive or its extracted folder (ignored by synthetic presets).
    pub data: PathBuf,
    /// The prepared folder (`None`: `data/prepared`); prepared on demand when the rate's set is missing.
    pub prepared: Option<PathBuf>,
    /// Download the archive into `data` when it is absent (`None`: never download).
    pub download: Option<DownloadOptions>,
    /// A TorchScript Inception network: FID and IS per lap when given.
    pub inception: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            resume: false,
            overwrite: false,
            device: Device::Cpu,
            data: PathBuf::from("data/cache/cifar10"),
            prepared: None,
            download: None,
            inception: None,
        }
    }
}

/// What [`run_experiment`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSummary {
    /// The report's path.
    pub report: PathBuf,
    /// Every line of `metrics.jsonl` (one per lap).
    pub metrics: Vec<Value>,
    /// Wall time of this call in seconds (data preparation included).
    pub seconds: f64,
}

/// Makes sure `prepared` holds the observation set of rate `rho` made with `seed`: when it does not, finds
/// the CIFAR-10 data in `data` (downloading it there when `download` is given and nothing is found), reads
/// it and writes the set with [`prepare`].
///
/// # Errors
/// [`CifarError::NotFound`] when there is no data and no download; download, format and IO errors.
pub fn ensure_prepared(
    prepared: &Path,
    data: &Path,
    rho: f64,
    seed: u64,
    download: Option<&DownloadOptions>,
    progress: bool,
) -> Result<PrepareSummary> {
    if let Ok(summary) = PrepareSummary::load(prepared) {
        let ready =
            summary.seed == seed && summary.set(rho).is_some_and(|s| prepared.join(&s.file).is_file());
        if ready {
            return Ok(summary);
        }
    }
    let source = match (CifarSource::locate(data), download) {
        (Some(s), _) => s,
        (None, Some(options)) => CifarSource::Archive(download_archive(data, options)?),
        (None, None) => CifarSource::find(data)?,
    };
    eprintln!(
        "diem-cifar: reading {} and preparing ρ = {rho} in {}",
        source.path().display(),
        prepared.display()
    );
    let cifar = source.read()?;
    let config = PrepareConfig { rhos: vec![rho], seed, progress, ..PrepareConfig::default() };
    prepare(&cifar, &source.path().display().to_string(), prepared, &config)
}

/// Runs the corrupted CIFAR-10 experiment of `config` in `out` (docs/method.md §9b): prepares the observations if
/// needed (a synthetic CIFAR-format data set for the `tiny`/`micro` presets, written to `out/data` and read
/// back from its `.tar.gz`), creates (or resumes, see [`RunOptions`]) the EM run, and after every lap writes
/// the prior and posterior grids, FID/IS (with an Inception network) and `report.md`.
///
/// # Errors
/// [`CifarError::Config`] for an invalid configuration or when `out` already holds a run and neither
/// `resume` nor `overwrite` is set; data, EM, sampling, metric, plot and IO errors.
pub fn run_experiment(config: &CifarConfig, out: &Path, options: &RunOptions) -> Result<ExperimentSummary> {
    run_experiment_on(Rc::new(Single), config, out, options)
}

/// [`run_experiment`] as one rank of a data-parallel run over `comm` (every rank calls it with the same
/// arguments, under `mpirun` or `srun`): rank 0 prepares the data, writes the files and evaluates; every rank
/// loads the observations and shares the E-steps and M-steps ([`diem_em::dist`]). A failure on any rank is
/// every rank's error.
///
/// # Errors
/// As [`run_experiment`]; [`CifarError::Em`] naming the failing rank on the other ranks.
pub fn run_experiment_on(
    comm: Rc<dyn Communicator>,
    config: &CifarConfig,
    out: &Path,
    options: &RunOptions,
) -> Result<ExperimentSummary> {
    let start = Instant::now();
    let existing = is_run_dir(out);
    let checked = if existing && !options.overwrite && !options.resume {
        Err(CifarError::config(
            "out",
            format!("{} already holds a run: pass --resume or --overwrite", out.display()),
        ))
    } else {
        Ok(())
    };
    agreed(&*comm, checked)?;
    if existing && options.overwrite {
        on_root(&*comm, || std::fs::remove_dir_all(out).map_err(|e| CifarError::io(out, e)))?;
    }
    let resuming = existing && !options.overwrite;
    let config = agreed(&*comm, if resuming { stored_config(out) } else { Ok(config.clone()) })?;
    agreed(&*comm, config.validate())?;
    let (data, prepared) = match &config.synthetic {
        Some(_) => {
            let dir = out.join(SYNTHETIC_DIR);
            (dir.clone(), dir.join("prepared"))
        }
        None => {
            let prepared = options.prepared.clone().unwrap_or_else(|| options.data.join("prepared"));
            (options.data.clone(), prepared)
        }
    };
    let progress = config.em.progress;
    on_root(&*comm, || {
        std::fs::create_dir_all(out).map_err(|e| CifarError::io(out, e))?;
        if let Some(s) = &config.synthetic {
            if !data.join(ARCHIVE_NAME).is_file() {
                let spec = SyntheticSpec { train_per_file: s.train_per_file, test: s.test, seed: s.seed };
                write_synthetic(&data.join("raw"), &data, &spec)?;
            }
        }
        ensure_prepared(&prepared, &data, config.rho, config.data_seed, options.download.as_ref(), progress)
    })?;
    let loaded = agreed(
        &*comm,
        load_prepared(&prepared, config.rho, options.device, config.images.map(|n| n as i64)),
    )?;
    if comm.is_root() {
        eprintln!(
            "diem-cifar: {} observations with ρ = {} (deleted fraction {:.4}) on {:?}",
            loaded.observations.len(),
            config.rho,
            loaded.set.deleted_fraction,
            options.device
        );
    }
    let mut run = if resuming {
        EmRun::resume_with(out, loaded.observations, options.device, comm.clone())?
    } else {
        let run =
            EmRun::create_with(out, config.em.clone(), loaded.observations, options.device, comm.clone())?;
        on_root(&*comm, || {
            let text = serde_json::to_vec_pretty(&config)
                .map_err(|source| CifarError::Json { path: out.join(CIFAR_CONFIG_FILE), source })?;
            diem_em::io::write_atomic(&out.join(CIFAR_CONFIG_FILE), &text).map_err(CifarError::from)
        })?;
        run
    };
    // The test split's observations are the validation set (docs/method.md §8); with `--images` (a subset of the
    // training set) they shrink in proportion, 10,000 : 50,000 as in the full data set.
    if let Some(v) = loaded.validation {
        let keep = config.images.map_or(v.len(), |n| ((n / 5).max(1) as i64).min(v.len()));
        run = run.with_validation(v.narrow(0, keep))?;
    }
    // Evaluation and reports are rank 0's (observers run there only).
    let inception = options.inception.as_ref().map(|p| p.display().to_string());
    let fid = on_root::<_, CifarError>(&*comm, || match &options.inception {
        Some(path) => {
            Ok(Some(FidEvaluator::new(path, options.device, &loaded.images, config.eval.batch, out)?))
        }
        None => Ok(None),
    })?
    .flatten();
    if comm.is_root() {
        run.add_observer(Box::new(CifarObserver::new(&config, loaded.images, fid, inception.clone(), out)));
    }
    run.run()?;
    let metrics = agreed(&*comm, diem_em::io::read_jsonl(&out.join(METRICS_FILE)).map_err(CifarError::from))?;
    on_root(&*comm, || write_report(out, &config, &metrics, inception.as_deref()))?;
    Ok(ExperimentSummary { report: out.join(REPORT_FILE), metrics, seconds: start.elapsed().as_secs_f64() })
}

/// Reads the [`CifarConfig`] a run was created with.
///
/// # Errors
/// IO or JSON errors naming the file.
pub fn stored_config(out: &Path) -> Result<CifarConfig> {
    let path = out.join(CIFAR_CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| CifarError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| CifarError::Json { path, source })
}
