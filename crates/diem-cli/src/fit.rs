//! `diem fit`: DiEM on the user's observations, in one process or as one rank of `mpirun`/`srun`.

use std::path::Path;
use std::rc::Rc;

use anyhow::Result;
use diem_dist::Communicator;
use diem_em::dist::sync;
use diem_em::{EmConfig, EmError, EmRun};
use tch::Device;

/// The arguments of `diem fit`.
pub struct FitArgs<'a> {
    /// The observations file.
    pub observations: &'a Path,
    /// The configuration file (required for a new run).
    pub config: Option<&'a Path>,
    /// The run directory.
    pub out: &'a Path,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Delete the diem run in `out` first ([`diem_em::layout::prepare_new_run_dir`]).
    pub overwrite: bool,
    /// The `--device` text.
    pub device: Option<String>,
    /// The `--dist` text.
    pub dist: Option<String>,
    /// No progress display.
    pub quiet: bool,
}

/// Runs `diem fit`. Under a launcher every rank runs this; every failure is agreed between the ranks, so
/// each rank ends with the same error (the failing rank with its own, the others naming it).
pub fn fit(args: &FitArgs<'_>) -> Result<()> {
    let (device, comm) = diem_em::dist::launch(args.device.as_deref(), args.dist.as_deref())?;
    match fit_on(args, device, comm.clone()) {
        Ok(laps) => {
            if comm.is_root() {
                crate::checks::say(format!("{laps} laps completed in {}", args.out.display()))?;
            }
            Ok(())
        }
        Err(e) if comm.size() > 1 => {
            Err(e.context(format!("rank {} of {} ({} back end)", comm.rank(), comm.size(), comm.backend())))
        }
        Err(e) => Err(e),
    }
}

/// The run itself, every step agreed between the ranks.
fn fit_on(args: &FitArgs<'_>, device: Device, comm: Rc<dyn Communicator>) -> Result<usize> {
    // A new run goes into an empty or new directory: checked first (nothing is deleted yet), before the
    // possibly long data load; --overwrite deletes a previous run's files, and nothing else, only once the
    // configuration and the data passed every check. Rank 0 decides and deletes; every rank learns.
    let keep: Vec<&Path> = [Some(args.observations), args.config].into_iter().flatten().collect();
    let on_root = |dry_run: bool| {
        let prepared = if comm.is_root() {
            diem_em::layout::prepare_new_run_dir(args.out, args.overwrite, &keep, dry_run).map(|_| ())
        } else {
            Ok(())
        };
        sync(&*comm, prepared)
    };
    let config = if args.resume {
        None
    } else {
        let config = match args.config {
            Some(path) => EmConfig::from_file(path),
            None => Err(EmError::config("--config", "is required unless --resume")),
        };
        let config = sync(&*comm, config)?;
        on_root(true)?;
        Some(config)
    };
    let loaded = diem_operators::Observation::load(args.observations, device).map_err(EmError::from);
    // The loader's errors name the file; after the agreement, the other ranks name the failing rank too.
    let obs = sync(&*comm, loaded)?;
    let mut run = match config {
        None => EmRun::resume_with(args.out, obs, device, comm.clone())?,
        Some(config) => {
            if args.overwrite {
                sync(&*comm, EmRun::check_new(&config, &obs, comm.size()))?;
                on_root(false)?;
            }
            EmRun::create_with(args.out, config, obs, device, comm.clone())?
        }
    };
    if comm.is_root() {
        for w in run.warnings() {
            crate::checks::warn(format!("warning: {w}"));
        }
    }
    run.set_progress(!args.quiet);
    let summary = run.run()?;
    Ok(summary.completed_laps)
}
