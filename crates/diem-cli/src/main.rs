//! `diem`: the command-line interface to diem's diffusion priors.
//!
//! - `diem info`: the compute environment.
//! - `diem fit --observations obs.npz --config cfg.json --out runs/x [--resume | --overwrite]`: DiEM (Gaussian
//!   EM initialization, then E/M laps) into a run directory, which must be empty or new; `--resume`
//!   continues a killed run, `--overwrite` deletes a previous run's files first. Under `mpirun -np K` or
//!   `srun` it runs data-parallel on K ranks (built with the `mpi` feature).
//! - `diem sample --prior DIR -n N --out samples.npy`: prior samples (DIR: a run directory or a `lap-NNN`).
//! - `diem posterior --prior DIR --observations obs.npz --method mmps --out post.npy`: one posterior sample per
//!   observation (methods: mmps, mmps-cov-x, mmps-cov-t, mmps-ones, mmps-zeros, pgdm, tmpd, diffpir, dps).
//! - `diem inspect DIR`: the lap table of a run.
//!
//! Every command takes `--device auto|cpu|cuda|cuda:N` (default: `$DIEM_DEVICE`, else auto).
//!
//! Exit status: 0 on success, 1 on any error (printed once on stderr, with its causes), 2 for a command
//! line that does not parse. A command never exits 0 after writing a non-finite result.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod checks;
mod fit;
mod inspect;
mod prior;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use diem_models::DeviceChoice;
use tch::Device;

/// Learn diffusion priors from incomplete, noisy observations and sample posteriors with them.
#[derive(Parser)]
#[command(name = "diem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the libtorch build, the visible CUDA devices and the device diem would use.
    Info {
        /// Device to resolve: auto, cpu, cuda or cuda:N (default: $DIEM_DEVICE, else auto).
        #[arg(long)]
        device: Option<String>,
    },
    /// Fit a diffusion prior to observations by DiEM.
    Fit {
        /// Observations (.npz or .safetensors: y, operator, noise_std, operator arrays).
        #[arg(long)]
        observations: PathBuf,
        /// The EM configuration (JSON; see data/configs/). Not with --resume: a resumed run keeps its own
        /// config.json, in which only laps, progress, diagnostics and storage may be edited.
        #[arg(long, conflicts_with = "resume")]
        config: Option<PathBuf>,
        /// The run directory: empty or new, unless --resume or --overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in --out after its last completed lap (its config.json is used).
        #[arg(long)]
        resume: bool,
        /// Delete the diem run in --out first (state.bin, config.json, metrics.jsonl, gaussian.safetensors,
        /// init/, lap-NNN/ and temporary files); refused when --out holds anything else.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Device: auto, cpu, cuda or cuda:N. Under mpirun/srun, auto and cuda pick the GPU of the rank's
        /// local rank.
        #[arg(long)]
        device: Option<String>,
        /// Collectives across ranks: auto, single, mpi or nccl (default: $DIEM_DIST, else auto: MPI when a
        /// launcher started several ranks, NCCL on top for CUDA when built with it).
        #[arg(long)]
        dist: Option<String>,
        /// No progress display (without a terminal, progress is logged as timestamped lines on stderr).
        #[arg(long)]
        quiet: bool,
    },
    /// Draw samples from a trained prior.
    Sample {
        /// A run directory (its last lap) or a checkpoint directory (lap-NNN).
        #[arg(long)]
        prior: PathBuf,
        /// Number of samples.
        #[arg(short = 'n', long)]
        n: i64,
        /// Output .npy file (not inside the prior's directory).
        #[arg(long)]
        out: PathBuf,
        /// Sampler (diem_sampling::SamplerSpec::NAMES): ddpm, ddim, pc, or the ODE solvers euler, heun,
        /// dpmpp2m.
        #[arg(long, default_value = "ddim",
              value_parser = clap::builder::PossibleValuesParser::new(diem_sampling::SamplerSpec::NAMES))]
        sampler: String,
        /// Sampler steps.
        #[arg(long, default_value_t = 256)]
        steps: usize,
        /// Noise seed (chunk c of the samples uses seed + c).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Samples drawn at once (bounds the working memory).
        #[arg(long, default_value_t = 65_536)]
        chunk: i64,
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
    },
    /// Draw one posterior sample per observation.
    Posterior {
        /// A run directory (its last lap) or a checkpoint directory (lap-NNN).
        #[arg(long)]
        prior: PathBuf,
        /// Observations (.npz or .safetensors).
        #[arg(long)]
        observations: PathBuf,
        /// The posterior method (diem_sampling::PosteriorMethod::NAMES).
        #[arg(long, default_value = "mmps",
              value_parser = clap::builder::PossibleValuesParser::new(diem_sampling::PosteriorMethod::NAMES))]
        method: String,
        /// Output .npy file (not an input, not inside the prior's directory).
        #[arg(long)]
        out: PathBuf,
        /// Sampler (diem_sampling::SamplerSpec::NAMES): ddpm, ddim, pc, or the ODE solvers euler, heun,
        /// dpmpp2m. DPS is its own sampler: it uses only the grid of ddpm, ddim or pc, and refuses the ODE
        /// solvers.
        #[arg(long, default_value = "ddpm",
              value_parser = clap::builder::PossibleValuesParser::new(diem_sampling::SamplerSpec::NAMES))]
        sampler: String,
        /// Sampler steps.
        #[arg(long, default_value_t = 256)]
        steps: usize,
        /// Krylov solver: cg, gmres or bicgstab.
        #[arg(long, default_value = "cg")]
        solver: String,
        /// Krylov iterations.
        #[arg(long, default_value_t = 1)]
        iterations: usize,
        /// DPS step size ζ.
        #[arg(long, default_value_t = 1.0)]
        zeta: f64,
        /// MMPS without its safeguards (the curvature fallback and the misfit damping), as the paper and
        /// the reference code write it.
        #[arg(long)]
        unguarded: bool,
        /// Observations per chunk.
        #[arg(long, default_value_t = 256)]
        chunk: i64,
        /// Noise seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long)]
        device: Option<String>,
    },
    /// Print the lap table of a run directory.
    Inspect {
        /// The run directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before any libtorch call: libgomp's wait policy (a re-execution) and DIEM_THREADS.
    diem_models::init_process_threads();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error and its causes on stderr, each once: a cause whose text an earlier line already
/// contains (a library error that names its file, wrapped in the same context) is not repeated.
fn report(e: &anyhow::Error) {
    let mut lines: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
    }
    let mut text = format!("error: {}", lines.first().map_or("", String::as_str));
    for l in lines.iter().skip(1) {
        text.push_str(&format!("\n  caused by: {l}"));
    }
    checks::warn(text);
}

fn run(command: Cmd) -> Result<()> {
    match command {
        Cmd::Info { device } => info(device),
        Cmd::Fit { observations, config, out, resume, overwrite, device, dist, quiet } => {
            fit::fit(&fit::FitArgs {
                observations: &observations,
                config: config.as_deref(),
                out: &out,
                resume,
                overwrite,
                device,
                dist,
                quiet,
            })
        }
        Cmd::Sample { prior, n, out, sampler, steps, seed, chunk, device } => {
            prior::sample(&prior::SampleArgs {
                prior: &prior,
                n,
                out: &out,
                sampler: &sampler,
                steps,
                seed,
                chunk,
                device: resolve(device)?,
            })
        }
        Cmd::Posterior {
            prior,
            observations,
            method,
            out,
            sampler,
            steps,
            solver,
            iterations,
            zeta,
            unguarded,
            chunk,
            seed,
            device,
        } => prior::posterior(&prior::PosteriorArgs {
            prior: &prior,
            observations: &observations,
            method: &method,
            out: &out,
            sampler: &sampler,
            steps,
            solver: &solver,
            iterations,
            zeta,
            unguarded,
            chunk,
            seed,
            device: resolve(device)?,
        }),
        Cmd::Inspect { dir } => inspect::inspect(&dir),
    }
}

pub(crate) fn resolve(device: Option<String>) -> Result<Device> {
    Ok(match device {
        Some(text) => text.parse::<DeviceChoice>()?.resolve()?,
        None => diem_models::device_from_env()?,
    })
}

fn info(device: Option<String>) -> Result<()> {
    let resolved = resolve(device)?;
    let say = checks::say;
    say(format!("diem {}", env!("CARGO_PKG_VERSION")))?;
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown (no /proc/self/maps)",
    };
    say(format!("libtorch has CUDA: {}", yes_no(diem_models::device::libtorch_has_cuda())))?;
    say(format!("CUDA runtime loaded: {}", yes_no(diem_models::device::cuda_runtime_loaded())))?;
    say(format!("CUDA available: {}", tch::Cuda::is_available()))?;
    say(format!("CUDA devices: {}", diem_models::device::cuda_device_count()))?;
    say(format!("cuDNN available: {}", tch::Cuda::cudnn_is_available()))?;
    say(format!("intra-op threads: {}", tch::get_num_threads()))?;
    say(format!("distributed back ends compiled: {}", diem_dist::build_fingerprint()))?;
    match diem_dist::Launch::detect() {
        Some(l) => say(format!(
            "launched as rank {} of {} (local rank {}), by {}",
            l.rank, l.size, l.local_rank, l.launcher
        ))?,
        None => say("launched as a single process".to_string())?,
    }
    say(format!("selected device: {resolved:?}"))
}
