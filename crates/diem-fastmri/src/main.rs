//! `diem-fastmri`: the accelerated-MRI experiment of docs/method.md §9c from the command line
//! (`cargo xtask prepare-fastmri ...` and `cargo xtask reproduce-fastmri ...` forward their arguments here).
//!
//! ```text
//! diem-fastmri prepare --data DIR [--out DIR] [--acceleration 6] [--seed S] [--normalization max|minmax] [--max-volumes N]
//! diem-fastmri reproduce (--paper | --tiny) [--data DIR] [--out DIR] [--laps N] [--overwrite | --resume] [--seed S]
//! diem-fastmri make-fixture --out DIR [--volumes 3] [--slices 44] [--size 32] [--seed 0]
//! ```
//!
//! The device is CUDA when available, else the CPU (`DIEM_DEVICE=cpu|cuda|cuda:N` overrides). HDF5 files are
//! read with h5py through `$VIRTUAL_ENV/bin/python` (else `python3`; `--python` overrides).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use diem_fastmri::{
    make_fixture, prepare, reproduce_on, FastMriConfig, Normalization, PrepareConfig, RunOptions,
};

/// The accelerated-MRI DiEM experiment (fastMRI knee, docs/method.md §9c).
#[derive(Debug, Parser)]
#[command(name = "diem-fastmri", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract slices 10..=40 of every fastMRI volume, normalize them and simulate k-space observations.
    Prepare(PrepareArgs),
    /// Run DiEM (Gaussian init, E-/M-step laps, figures, report.md).
    Reproduce(ReproduceArgs),
    /// Write synthetic knee-like fastMRI HDF5 files (a `reconstruction_rss` dataset per volume).
    MakeFixture(FixtureArgs),
}

#[derive(Debug, Args)]
struct PrepareArgs {
    /// The fastMRI data root: every *.h5 below it (e.g. singlecoil_train/ and singlecoil_val/).
    #[arg(long)]
    data: PathBuf,
    /// The output folder.
    #[arg(long, default_value = "data/cache/fastmri")]
    out: PathBuf,
    /// Acceleration R of the random column masks.
    #[arg(long, default_value_t = 6.0)]
    acceleration: f64,
    /// Seed of the masks and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-volume normalization to [−2, 2].
    #[arg(long, value_enum, default_value_t = Normalization::Max)]
    normalization: Normalization,
    /// Use only the first N volumes (sorted by path).
    #[arg(long)]
    max_volumes: Option<usize>,
    /// The image side must be a multiple of this (the paper U-Net's 32).
    #[arg(long, default_value_t = 32)]
    size_multiple: i64,
    /// The Python interpreter with h5py.
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["paper", "tiny", "preset"])))]
struct ReproduceArgs {
    /// The paper's configuration (GPU scale; needs prepared fastMRI data).
    #[arg(long)]
    paper: bool,
    /// The CPU configuration on a synthetic fixture (1–3 minutes).
    #[arg(long)]
    tiny: bool,
    /// A preset by name: paper, tiny or micro (the test size).
    #[arg(long)]
    preset: Option<String>,
    /// A folder written by `prepare`, or a raw fastMRI folder (prepared into OUT/data). Default: the
    /// paper's data/cache/fastmri; the tiny preset writes its own fixture.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run directory (default runs/fastmri-<preset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Laps (replaces the preset's; on --resume, stop after this many).
    #[arg(long)]
    laps: Option<usize>,
    /// Delete an existing run in OUT first.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the run in OUT after its last completed lap.
    #[arg(long)]
    resume: bool,
    /// The run seed.
    #[arg(long)]
    seed: Option<u64>,
    /// The Python interpreter with h5py.
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FixtureArgs {
    /// The output folder (singlecoil_train/ and singlecoil_val/ are created in it).
    #[arg(long)]
    out: PathBuf,
    /// Volumes (the last one goes to singlecoil_val when there are at least 2).
    #[arg(long, default_value_t = 3)]
    volumes: usize,
    /// Slices per volume.
    #[arg(long, default_value_t = 44)]
    slices: usize,
    /// Image side.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Seed of the phantoms.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The Python interpreter with h5py.
    #[arg(long)]
    python: Option<PathBuf>,
}

fn main() -> Result<()> {
    // Before any libtorch call: libgomp's wait policy (a re-execution) and DIEM_THREADS.
    diem_models::init_process_threads();
    let cli = Cli::parse();
    match cli.command {
        Command::Prepare(a) => {
            let python = a.python.unwrap_or_else(diem_fastmri::default_python);
            let config = PrepareConfig {
                acceleration: a.acceleration,
                seed: a.seed,
                normalization: a.normalization,
                max_volumes: a.max_volumes,
                size_multiple: a.size_multiple,
                progress: true,
                ..PrepareConfig::default()
            };
            let s = prepare(&python, &a.data, &a.out, &config)
                .with_context(|| format!("preparing {}", a.data.display()))?;
            println!(
                "fastmri: {} volumes → {} training and {} validation slices of {}×{} in {} ({:.1} s); mean kept \
                 column fraction {:.4} (1/R = {:.4})",
                s.volumes,
                s.train_slices,
                s.val_slices,
                s.size,
                s.size,
                a.out.display(),
                s.seconds,
                s.mean_kept_fraction,
                s.expected_kept_fraction
            );
        }
        Command::Reproduce(a) => {
            let name = if a.paper {
                "paper".to_string()
            } else if a.tiny {
                "tiny".to_string()
            } else {
                a.preset.clone().unwrap_or_else(|| "tiny".into())
            };
            let mut config = FastMriConfig::preset(&name)?;
            if let Some(s) = a.seed {
                config.em.seed = s;
            }
            let out = a.out.unwrap_or_else(|| PathBuf::from(format!("runs/fastmri-{name}")));
            let data = a.data.or_else(|| (name == "paper").then(|| PathBuf::from("data/cache/fastmri")));
            let (device, comm) = diem_em::dist::launch(None, None)?;
            // The CPU presets run many tiny ops: libtorch's thread pool only adds synchronization (and
            // spins badly on a shared 2-core machine), so they use one thread unless OMP_NUM_THREADS or
            // DIEM_THREADS is set.
            if device == tch::Device::Cpu
                && name != "paper"
                && std::env::var_os("OMP_NUM_THREADS").is_none()
                && std::env::var_os(diem_models::threads::THREADS_VAR).is_none()
            {
                tch::set_num_threads(1);
            }
            eprintln!(
                "fastmri: preset `{name}` on {device:?} ({} libtorch threads), run directory {}",
                tch::get_num_threads(),
                out.display()
            );
            let options = RunOptions {
                resume: a.resume,
                overwrite: a.overwrite,
                device,
                python: a.python,
                progress: true,
            };
            let root = comm.is_root();
            let summary = reproduce_on(comm, &config, data.as_deref(), &out, a.laps, &options)?;
            if !root {
                return Ok(());
            }
            println!(
                "fastmri: {} laps in {:.0} s; report: {}",
                summary.metrics.len(),
                summary.seconds,
                summary.report.display()
            );
        }
        Command::MakeFixture(a) => {
            let python = a.python.unwrap_or_else(diem_fastmri::default_python);
            let files = make_fixture(&python, &a.out, a.volumes, a.slices, a.size, a.seed)?;
            println!("fastmri: wrote {} volumes under {}", files.len(), a.out.display());
        }
    }
    Ok(())
}
