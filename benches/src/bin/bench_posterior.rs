//! One side of `cargo xtask bench posterior`: `prepare` writes the shared problem file (MLP weights,
//! projections, observations, probe), `run` times one method in this process and prints a JSON line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diem_benches::posterior_bench::{run_method, BenchMethod, BenchProblem};

/// Posterior-sampling benchmark (diem side).
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Draw the problem (random MLP weights, A, y) and write it to a safetensors file.
    Prepare {
        /// Number of samples N.
        #[arg(long, default_value_t = 8192)]
        samples: i64,
        /// Seed of the weights and the observations.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Time one method on a prepared problem; prints one JSON line.
    Run {
        /// The problem file written by `prepare`.
        #[arg(long)]
        problem: PathBuf,
        /// ddim, dps, mmps1 or mmps3.
        #[arg(long)]
        method: String,
        /// Sampler steps T.
        #[arg(long, default_value_t = 256)]
        steps: usize,
        /// Seed of the sampler noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// libtorch intra-op threads (default: libtorch's choice).
        #[arg(long)]
        threads: Option<i32>,
    },
}

fn main() -> Result<()> {
    let device = diem_models::device_from_env().context("choosing the device")?;
    match Args::parse().command {
        Command::Prepare { samples, seed, out } => {
            let problem = BenchProblem::generate(samples, seed, device)?;
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            problem.export(&out).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("bench_posterior: wrote {} (N = {samples})", out.display());
        }
        Command::Run { problem, method, steps, seed, threads } => {
            if let Some(t) = threads {
                tch::set_num_threads(t);
            }
            let method = BenchMethod::parse(&method)?;
            let problem = BenchProblem::import(&problem, device)
                .with_context(|| format!("reading {}", problem.display()))?;
            let result = run_method(&problem, method, steps, seed)?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}
