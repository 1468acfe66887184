//! The run directory layout (DESIGN.md "Files").
//!
//! ```text
//! <run>/
//!   config.json            the EmConfig (written once by EmRun::create)
//!   state.bin              RunState (bincode): the commit point, rewritten last after every step
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
//! Every file is written to a temporary name and renamed; a lap counts as done only once `state.bin` says so,
//! so a kill at any point leaves the last completed lap intact and `EmRun::resume` redoes the interrupted one.

use std::path::{Path, PathBuf};

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
