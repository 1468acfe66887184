//! The run directory layout (docs/architecture.md "Files").
//!
//! ```text
//! <run>/
//!   state.bin              RunState (bincode): the commit point, rewritten last after every step
//!   config.json            the EmConfig (written by EmRun::create right after state.bin; editable, see
//!                          config::RESUMABLE)
//!   gaussian.safetensors   the Gaussian initialization (μ_x, Σ_x as DPLR, x_shape)
//!   init/samples.npy       LapOrder::TrainThenSample only: the initial E-step samples π_0
//!   metrics.jsonl          one JSON line per completed lap
//!   lap-NNN/               one per completed lap (NNN = 000, 001, ...)
//!     config.json            diem-models checkpoint config (network, schedule, μ_x shape, EMA decay)
//!     weights.safetensors    the model at the end of the lap (the EMA weights when an EMA is configured)
//!     ema.safetensors        the EMA (when configured)
//!     samples.npy            the lap's E-step samples [k·N, ..x_shape] (unfiltered, f32)
//!     gaussian.safetensors   the current (μ_x, Σ_x) (the lap's PPCA refit, or the initial fit)
//!     train.jsonl            the M-step's loss curve
//!     validation.jsonl       with a validation set: the M-step's validation losses (EMA weights)
//!     ...                    observers' files (plots)
//! ```
//!
//! Every file is written to a temporary name (`.name.tmp-PID`) and renamed; a lap counts as done only once
//! `state.bin` says so, so a kill at any point leaves the last completed lap intact and `EmRun::resume` redoes
//! the interrupted one (and removes the temporary files the kill left). `state.bin` also carries a copy of
//! the configuration the committed steps ran with, so a resume can tell what was edited in `config.json`
//! (and restore `config.json` if a kill came between the two files of a new run).

use std::path::{Path, PathBuf};

use crate::error::{EmError, Result};

/// The run configuration file.
pub const CONFIG_FILE: &str = "config.json";
/// The resumable state file.
pub const STATE_FILE: &str = "state.bin";
/// The per-lap metrics (JSON lines).
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The Gaussian prior file (run root: the initial fit; lap directories: the current one).
pub const GAUSSIAN_FILE: &str = "gaussian.safetensors";
/// The directory of the initial samples.
pub const INIT_DIR: &str = "init";
/// The samples file (in `init/` and every lap directory).
pub const SAMPLES_FILE: &str = "samples.npy";
/// The M-step loss curve in a lap directory.
pub const TRAIN_LOG_FILE: &str = "train.jsonl";
/// The M-step's validation losses in a lap directory (runs with a validation set).
pub const VALIDATION_FILE: &str = "validation.jsonl";

/// `run/lap-NNN`.
pub fn lap_dir(run: &Path, lap: usize) -> PathBuf {
    run.join(format!("lap-{lap:03}"))
}

/// Whether `dir` holds an EM run (a `state.bin`).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Whether `name`, an entry of a run directory, is one a run writes: `config.json`, `state.bin`,
/// `metrics.jsonl`, `gaussian.safetensors`, `init/`, `lap-NNN/`, or a temporary `.name.tmp-PID`.
pub fn is_run_entry(name: &str) -> bool {
    [CONFIG_FILE, STATE_FILE, METRICS_FILE, GAUSSIAN_FILE, INIT_DIR].contains(&name)
        || is_lap_dir_name(name)
        || diem_models::checkpoint::is_temp_file(name).is_some()
}

/// Whether `name` is a lap directory's name (`lap-` and at least three digits).
pub fn is_lap_dir_name(name: &str) -> bool {
    name.strip_prefix("lap-").is_some_and(|d| d.len() >= 3 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The entries of `dir` (names, sorted), without the temporary files of dead processes; empty when `dir`
/// does not exist.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EmError::io(dir, e)),
    };
    let mut names = Vec::new();
    for e in read {
        let e = e.map_err(|err| EmError::io(dir, err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = diem_models::checkpoint::is_temp_file(&name).is_some_and(|pid| {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        });
        if !stale {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A list of names for a message: the first few, then how many more.
fn name_list(names: &[String]) -> String {
    let mut s: Vec<String> = names.iter().take(6).cloned().collect();
    if names.len() > 6 {
        s.push(format!("and {} more", names.len() - 6));
    }
    s.join(", ")
}

/// Checks that a new run may be created in `dir` without overwriting anything: `dir` is absent or a
/// directory that holds no entry a run writes ([`is_run_entry`]; stale temporary files of dead processes
/// excepted). Other entries (a pipeline's data folder, say) are left alone. This is what
/// [`crate::EmRun::create`] checks.
///
/// # Errors
/// [`EmError::RunDir`] naming the directory and the entries in the way.
pub fn check_new_run_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(EmError::RunDir { path: dir.into(), reason: "exists and is not a directory".into() });
    }
    if is_run_dir(dir) {
        return Err(EmError::RunDir {
            path: dir.into(),
            reason: "already holds a run (state.bin); resume it or choose another directory".into(),
        });
    }
    let clash: Vec<String> = entries(dir)?.into_iter().filter(|n| is_run_entry(n)).collect();
    if !clash.is_empty() {
        return Err(EmError::RunDir {
            path: dir.into(),
            reason: format!(
                "holds {} that a new run would overwrite (a run without state.bin, or someone else's \
                 files): choose another directory, or delete them",
                name_list(&clash)
            ),
        });
    }
    Ok(())
}

/// What `diem fit` does with its `--out` directory before a new run: `dir` must be absent or empty (stale
/// temporary files of dead processes do not count). With `overwrite`, a directory that holds a diem run
/// (a readable `state.bin`, or a `config.json` that is a valid run configuration) and nothing else is
/// emptied first: exactly its run entries ([`is_run_entry`]: `config.json`, `state.bin`, `metrics.jsonl`,
/// `gaussian.safetensors`, `init/`, `lap-NNN/` with everything inside, temporary files) are removed. It
/// refuses, removing nothing, when the directory also holds anything else, is not a run, or holds one of
/// `keep` (the command's own input files). Returns the removed paths; with `dry_run`, checks the same and
/// returns what it would remove, removing nothing.
///
/// # Errors
/// [`EmError::RunDir`] naming the directory and the entries that block it; [`EmError::Io`] for a file
/// that could not be removed.
pub fn prepare_new_run_dir(
    dir: &Path,
    overwrite: bool,
    keep: &[&Path],
    dry_run: bool,
) -> Result<Vec<PathBuf>> {
    if dir.exists() && !dir.is_dir() {
        return Err(EmError::RunDir { path: dir.into(), reason: "exists and is not a directory".into() });
    }
    let names = entries(dir)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if !overwrite {
        let what = if is_run_dir(dir) { "already holds a run (state.bin)" } else { "is not empty" };
        return Err(EmError::RunDir {
            path: dir.into(),
            reason: format!(
                "{what}: it holds {}. A new run goes into an empty or new directory; pass --resume to \
                 continue a run, or --overwrite to delete a run's files first",
                name_list(&names)
            ),
        });
    }
    let foreign: Vec<String> = names.iter().filter(|n| !is_run_entry(n)).cloned().collect();
    if !foreign.is_empty() {
        return Err(EmError::RunDir {
            path: dir.into(),
            reason: format!(
                "--overwrite deletes only a diem run's own files, and this directory also holds {}: move \
                 them or choose another directory",
                name_list(&foreign)
            ),
        });
    }
    let is_run = crate::io::RunState::load(&dir.join(STATE_FILE)).is_ok()
        || crate::config::EmConfig::from_file(&dir.join(CONFIG_FILE)).is_ok();
    if !is_run {
        return Err(EmError::RunDir {
            path: dir.into(),
            reason: format!(
                "--overwrite deletes only a diem run, and this directory holds {} but no readable state.bin \
                 or run config.json: delete it yourself if it is no longer needed",
                name_list(&names)
            ),
        });
    }
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    for k in keep {
        if let (Some(k), Some(d)) = (canon(k), canon(dir)) {
            if k.starts_with(&d) {
                return Err(EmError::RunDir {
                    path: dir.into(),
                    reason: format!(
                        "--overwrite would delete {}, an input of this command: move it out of the run \
                         directory first",
                        k.display()
                    ),
                });
            }
        }
    }
    if dry_run {
        return Ok(names.iter().map(|n| dir.join(n)).collect());
    }
    let mut removed = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| EmError::io(&path, e))?;
        let result = if meta.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        result.map_err(|e| EmError::io(&path, e))?;
        removed.push(path);
    }
    Ok(removed)
}
