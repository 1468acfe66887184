//! [`reproduce`]: data (prepared, raw or the synthetic fixture), run directory, EM laps and report in one call.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use diem_dist::{Communicator, Single};
use diem_em::dist::{agreed, on_root};
use diem_em::layout::{is_run_dir, METRICS_FILE};
use diem_em::EmRun;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::{size_multiple, FastMriConfig};
use crate::data::make_fixture;
use crate::error::{FastMriError, Result};
use crate::observer::MriObserver;
use crate::prepare::{prepare, PreparedData, PREPARE_FILE};
use crate::report::{write_report, REPORT_FILE};

/// The file holding the experiment's configuration and data folder in the run directory.
pub const FASTMRI_FILE: &str = "fastmri.json";

/// How [`reproduce`] treats an existing run directory, where it computes and which python it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Resume a run found in the output directory (with the configuration stored there).
    pub resume: bool,
    /// Delete a run found in the output directory and start over (takes precedence over `resume`).
    pub overwrite: bool,
    /// The device of the run.
    pub device: Device,
    /// The Python interpreter for HDF5 work (default: [`crate::default_python`]).
    pub python: Option<PathBuf>,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { resume: false, overwrite: false, device: Device::Cpu, python: None, progress: false }
    }
}

/// What [`reproduce`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ReproduceSummary {
    /// The report's path.
    pub report: PathBuf,
    /// The prepared data folder used.
    pub data: PathBuf,
    /// Every line of `metrics.jsonl`.
    pub metrics: Vec<serde_json::Value>,
    /// Wall time of this call in seconds.
    pub seconds: f64,
}

/// The content of [`FASTMRI_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRun {
    /// The configuration.
    pub config: FastMriConfig,
    /// The prepared data folder.
    pub data: PathBuf,
}

/// Resolves the prepared folder: `data` itself when it holds `prepare.json`; a raw fastMRI folder is prepared
/// into `out/data`; without `data`, the preset's fixture is written to `out/fixture` and prepared.
fn resolve_data(
    config: &FastMriConfig,
    data: Option<&Path>,
    out: &Path,
    options: &RunOptions,
) -> Result<PathBuf> {
    let python = options.python.clone().unwrap_or_else(crate::python::default_python);
    let mut prep = config.prepare.clone();
    prep.size_multiple = size_multiple(&config.em.network);
    prep.progress = options.progress;
    let prepared = out.join("data");
    match data {
        Some(d) if d.join(PREPARE_FILE).is_file() => Ok(d.to_path_buf()),
        Some(d) => {
            eprintln!("fastmri: preparing {} into {}", d.display(), prepared.display());
            prepare(&python, d, &prepared, &prep)?;
            Ok(prepared)
        }
        None => {
            let Some(f) = &config.fixture else {
                return Err(FastMriError::config(
                    "data",
                    format!(
                        "the `{}` preset needs data: pass --data with a folder written by `diem-fastmri prepare` \
                         (or a raw fastMRI folder)",
                        config.preset
                    ),
                ));
            };
            let root = out.join("fixture");
            eprintln!("fastmri: writing the synthetic fixture to {}", root.display());
            make_fixture(&python, &root, f.volumes, f.slices, f.size, f.seed)?;
            prepare(&python, &root, &prepared, &prep)?;
            Ok(prepared)
        }
    }
}

/// Runs the accelerated-MRI experiment of `config` in `out` (docs/method.md §9c): resolves the data (see below),
/// creates the EM run (or resumes it, see [`RunOptions`]) with `config.em_for(N)`, draws the figures of
/// every lap with an [`MriObserver`], and writes `report.md`.
///
/// `data`: a folder written by [`prepare`] (`prepare.json`), or a raw fastMRI folder (prepared into
/// `out/data`), or `None` for the preset's synthetic fixture (written to `out/fixture`, prepared into
/// `out/data`). `laps` (if any) replaces the preset's lap count of a new run, or stops a resumed run early.
///
/// # Errors
/// [`FastMriError::Config`] for an invalid configuration or when `out` already holds a run and neither
/// `resume` nor `overwrite` is set; data, python, EM, sampling, metric and plot errors.
pub fn reproduce(
    config: &FastMriConfig,
    data: Option<&Path>,
    out: &Path,
    laps: Option<usize>,
    options: &RunOptions,
) -> Result<ReproduceSummary> {
    reproduce_on(Rc::new(Single), config, data, out, laps, options)
}

/// [`reproduce`] as one rank of a data-parallel run over `comm` (every rank calls it with the same arguments,
/// under `mpirun` or `srun`): rank 0 prepares the data and writes the files and figures; every rank loads the
/// prepared data and shares the E-steps and M-steps ([`diem_em::dist`]). A failure on any rank is every
/// rank's error.
///
/// # Errors
/// As [`reproduce`]; [`FastMriError::Em`] naming the failing rank on the other ranks.
pub fn reproduce_on(
    comm: Rc<dyn Communicator>,
    config: &FastMriConfig,
    data: Option<&Path>,
    out: &Path,
    laps: Option<usize>,
    options: &RunOptions,
) -> Result<ReproduceSummary> {
    let start = Instant::now();
    let existing = is_run_dir(out);
    let checked = if existing && !options.overwrite && !options.resume {
        Err(FastMriError::config(
            "out",
            format!("{} already holds a run: pass --resume or --overwrite", out.display()),
        ))
    } else {
        Ok(())
    };
    agreed(&*comm, checked)?;
    if existing && options.overwrite {
        on_root(&*comm, || std::fs::remove_dir_all(out).map_err(|e| FastMriError::io(out, e)))?;
    }
    let resuming = existing && !options.overwrite;
    let (mut config, data_dir) = if resuming {
        let stored = agreed(&*comm, stored_run(out))?;
        let dir =
            data.filter(|d| d.join(PREPARE_FILE).is_file()).map_or(stored.data.clone(), Path::to_path_buf);
        (stored.config, dir)
    } else {
        let mut c = config.clone();
        if let Some(l) = laps {
            c.em.laps = l;
        }
        c.em.progress = options.progress;
        agreed(&*comm, c.validate())?;
        // Rank 0 prepares (or finds) the data; the others learn where.
        let dir = on_root(&*comm, || -> Result<PathBuf> {
            diem_em::io::create_dir(out)?;
            resolve_data(&c, data, out, options)
        })?;
        let text = dir.map(|d| d.display().to_string().into_bytes()).unwrap_or_default();
        let all = comm.all_gather_bytes(&text).map_err(diem_em::EmError::from)?;
        (c, PathBuf::from(String::from_utf8_lossy(&all[0]).into_owned()))
    };
    let prepared = agreed(&*comm, PreparedData::load(&data_dir, options.device))?;
    let multiple = size_multiple(&config.em.network);
    if prepared.summary.size % multiple != 0 {
        return Err(FastMriError::data(
            &data_dir,
            format!(
                "images are {0}×{0} but the network needs a multiple of {multiple} (space-to-depth × 2^(levels−1))",
                prepared.summary.size
            ),
        ));
    }
    config.prepare.noise_std = prepared.summary.config.noise_std;
    let n = prepared.train.len();
    let em = config.em_for(n);
    let mut notes = vec![format!(
        "Data: {} ({} training slices from {} volumes, {} validation slices; validation: {}; mean kept column \
         fraction {:.4} vs 1/R = {:.4}).",
        data_dir.display(),
        prepared.summary.train_slices,
        prepared.summary.train_volumes,
        prepared.summary.val_slices,
        prepared.summary.val_source,
        prepared.summary.mean_kept_fraction,
        prepared.summary.expected_kept_fraction
    )];
    if prepared.heldout_from_train {
        notes.push(
            "There is no validation split: the figures' \"held-out\" slices are training slices.".into(),
        );
    }
    notes.push(match &prepared.validation {
        Some(v) => format!(
            "Validation (docs/method.md §8): every lap also samples the {} validation observations and records the EMA \
             model's loss on them every epoch (`lap-NNN/validation.jsonl`, `val_loss_last` below).",
            v.len()
        ),
        None => "No validation observations: no validation loss.".into(),
    });
    let mut run = if resuming {
        EmRun::resume_with(out, prepared.train.clone(), options.device, comm.clone())?
    } else {
        let run = EmRun::create_with(out, em, prepared.train.clone(), options.device, comm.clone())?;
        let mut stored = StoredRun { config: config.clone(), data: data_dir.clone() };
        stored.config.em = run.config().clone();
        on_root(&*comm, || {
            diem_em::io::write_json(&out.join(FASTMRI_FILE), &stored).map_err(FastMriError::from)
        })?;
        run
    };
    if let Some(v) = prepared.validation.clone() {
        run = run.with_validation(v)?;
    }
    config.em = run.config().clone();
    // Figures and reports are rank 0's (observers run there only).
    if comm.is_root() {
        let observer = MriObserver::new(&config, &prepared.heldout, out, notes.clone())?;
        run.add_observer(Box::new(observer));
    }
    match laps {
        Some(l) if resuming => run.run_until(l)?,
        _ => run.run()?,
    };
    let metrics =
        agreed(&*comm, diem_em::io::read_jsonl(&out.join(METRICS_FILE)).map_err(FastMriError::from))?;
    on_root(&*comm, || write_report(out, &config, &metrics, &notes))?;
    Ok(ReproduceSummary {
        report: out.join(REPORT_FILE),
        data: data_dir,
        metrics,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads the [`StoredRun`] a run was created with.
///
/// # Errors
/// IO or JSON errors naming the file.
pub fn stored_run(out: &Path) -> Result<StoredRun> {
    let path = out.join(FASTMRI_FILE);
    let bytes = std::fs::read(&path).map_err(|e| FastMriError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| FastMriError::Json { path, source })
}
