//! The image-scale pipelines of docs/method.md §9b–d: `prepare-cifar`, `reproduce-cifar`, `prepare-fastmri`,
//! `reproduce-fastmri` and `posterior-bench`.
//!
//! Each command builds one binary of the workspace in release mode with the libtorch environment (so xtask
//! itself never links libtorch) and forwards its arguments verbatim to that binary's subcommand:
//!
//! | xtask command | runs |
//! | --- | --- |
//! | `cargo xtask prepare-cifar ARGS` | `diem-cifar prepare ARGS` |
//! | `cargo xtask reproduce-cifar ARGS` | `diem-cifar reproduce ARGS` |
//! | `cargo xtask prepare-fastmri ARGS` | `diem-fastmri prepare ARGS` |
//! | `cargo xtask reproduce-fastmri ARGS` | `diem-fastmri reproduce ARGS` |
//! | `cargo xtask posterior-bench ARGS` | `inverse_bench ARGS` (package diem-benches) |
//!
//! `--help` after the command prints the binary's own options.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::torch;

/// The arguments forwarded to a pipeline binary (`--help` included, so the binary lists its own options).
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Forwarded {
    /// Options of the pipeline binary (run with `--help` to list them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// One pipeline: which binary of which package, and which subcommand (if any) it runs.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline {
    /// The cargo package.
    pub package: &'static str,
    /// The binary in that package.
    pub bin: &'static str,
    /// The binary's subcommand, placed before the forwarded arguments.
    pub subcommand: Option<&'static str>,
}

/// `cargo xtask prepare-cifar`.
pub const PREPARE_CIFAR: Pipeline =
    Pipeline { package: "diem-cifar", bin: "diem-cifar", subcommand: Some("prepare") };
/// `cargo xtask reproduce-cifar`.
pub const REPRODUCE_CIFAR: Pipeline =
    Pipeline { package: "diem-cifar", bin: "diem-cifar", subcommand: Some("reproduce") };
/// `cargo xtask prepare-fastmri`.
pub const PREPARE_FASTMRI: Pipeline =
    Pipeline { package: "diem-fastmri", bin: "diem-fastmri", subcommand: Some("prepare") };
/// `cargo xtask reproduce-fastmri`.
pub const REPRODUCE_FASTMRI: Pipeline =
    Pipeline { package: "diem-fastmri", bin: "diem-fastmri", subcommand: Some("reproduce") };
/// `cargo xtask posterior-bench`.
pub const POSTERIOR_BENCH: Pipeline =
    Pipeline { package: "diem-benches", bin: "inverse_bench", subcommand: None };

/// Builds `pipeline`'s binary in release mode and runs it with the forwarded arguments.
///
/// libtorch's intra-op threads stay at one unless `OMP_NUM_THREADS` is set, as for the other experiments:
/// on small shared CPUs its OpenMP pool oversubscribes badly; on a GPU the setting does not matter.
pub fn run(root: &Path, pipeline: Pipeline, forwarded: &Forwarded) -> Result<ExitCode> {
    let env = torch::setup(root)?;
    let path = crate::experiments::build_release_bin(root, &env, pipeline.package, pipeline.bin)?;
    let mut cmd = Command::new(&path);
    cmd.current_dir(root);
    env.apply(&mut cmd)?;
    if let Some(sub) = pipeline.subcommand {
        cmd.arg(sub);
    }
    cmd.args(&forwarded.args);
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    let shown = pipeline.subcommand.map_or_else(String::new, |s| format!(" {s}"));
    eprintln!("xtask: {}{shown} {}", path.display(), forwarded.args.join(" "));
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("cannot run {}", path.display()))?;
    let secs = start.elapsed().as_secs_f64();
    if status.success() {
        eprintln!("xtask: {}{shown} finished in {secs:.0} s (excluding the build)", pipeline.bin);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: {}{shown} failed after {secs:.0} s ({status})", pipeline.bin);
        Ok(ExitCode::FAILURE)
    }
}
