//! The manifold experiment's commands (docs/method.md §9a): `reproduce-manifold`, `demo` and `bench em`.
//!
//! Each one runs the `diem-manifold` binary (crate `diem-manifold`) in release mode through [`crate::cargo`], so
//! xtask itself never links libtorch.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::torch;

/// Options of `cargo xtask reproduce-manifold`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The paper's full configuration (GPU scale: 65,536 points, 32 laps of 65,536 steps, PC 4096,
    /// 16,384-point Sinkhorn at λ = 1e-3). Without it, the reduced CPU configuration runs.
    #[arg(long, conflicts_with = "reference")]
    pub paper: bool,
    /// The reference code's configuration: the paper's, with 64 laps and the `cov_x` covariance solved by CG
    /// to rtol 1e-3.
    #[arg(long = "ref", alias = "reference", id = "reference")]
    pub reference: bool,
    /// Output directory (default `runs/manifold-<preset>`). An existing run there is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start over: delete an existing run in the output directory first.
    #[arg(long)]
    pub overwrite: bool,
    /// Extra options for the binary, e.g. `-- --laps 4 --steps 512` (see `diem-manifold --help`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Options of `cargo xtask demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Extra options for the binary (see `diem-manifold --help`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Options of `cargo xtask bench em`.
#[derive(Args, Debug)]
pub struct BenchEmArgs {
    /// Output directory of the markdown report.
    #[arg(long, default_value = "runs/bench-em")]
    pub out: PathBuf,
    /// Extra options for the binary's `bench` command (see `diem-manifold --help`).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// `cargo run --release -p diem-manifold --bin diem-manifold -- <args>` with the libtorch environment.
///
/// libtorch's intra-op threads default to 1 unless `OMP_NUM_THREADS` is set: the manifold MLP's matrices are
/// small, so on the 2-core development machine 2 threads were only ~15% faster when it was idle, and up to
/// ~50× slower (OpenMP workers spinning at barriers) while other processes held the cores.
fn binary(root: &Path, args: &[String]) -> Result<Command> {
    let env = torch::setup(root)?;
    let mut all: Vec<String> = ["run", "--release", "-p", "diem-manifold", "--bin", "diem-manifold", "--"]
        .map(String::from)
        .to_vec();
    all.extend(args.iter().cloned());
    let mut cmd = crate::cargo(root, &env, &all)?;
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    Ok(cmd)
}

/// Runs `cmd`, returning whether it succeeded and its wall time in seconds.
fn run_timed(mut cmd: Command, what: &str) -> Result<(bool, f64)> {
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    Ok((status.success(), start.elapsed().as_secs_f64()))
}

/// Builds the binary once (so the run's wall time excludes compilation) and reports the build time.
fn build(root: &Path) -> Result<f64> {
    let env = torch::setup(root)?;
    let args = ["build", "--release", "-p", "diem-manifold", "--bin", "diem-manifold"];
    let (ok, secs) = run_timed(crate::cargo(root, &env, &args)?, "cargo build")?;
    anyhow::ensure!(ok, "building diem-manifold failed");
    eprintln!("xtask: release build of diem-manifold: {secs:.0} s");
    Ok(secs)
}

/// `cargo xtask reproduce-manifold [--paper | --ref] [--out DIR] [--overwrite] [-- extra]`.
pub fn reproduce(root: &Path, args: ReproduceArgs) -> Result<ExitCode> {
    let preset = if args.paper {
        "paper"
    } else if args.reference {
        "reference"
    } else {
        "demo"
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from(format!("runs/manifold-{preset}")));
    build(root)?;
    let mut list = vec!["run".to_string(), "--preset".into(), preset.into(), "--out".into()];
    list.push(out.display().to_string());
    list.push(if args.overwrite { "--overwrite".into() } else { "--resume".into() });
    list.extend(args.extra);
    let (ok, secs) = run_timed(binary(root, &list)?, "diem-manifold")?;
    finish(root, &out, ok, secs)
}

/// `cargo xtask demo`: the reduced manifold run into `runs/demo/` (fresh each time).
pub fn demo(root: &Path, args: DemoArgs) -> Result<ExitCode> {
    build(root)?;
    let mut list = vec!["run".to_string(), "--preset".into(), "demo".into(), "--out".into()];
    list.push(args.out.display().to_string());
    list.push("--overwrite".into());
    list.extend(args.extra);
    let (ok, secs) = run_timed(binary(root, &list)?, "the manifold demo")?;
    finish(root, &args.out, ok, secs)
}

/// `cargo xtask bench em`: one reduced lap, E-step and M-step timed against the measured matmul peak.
pub fn bench_em(root: &Path, args: BenchEmArgs) -> Result<ExitCode> {
    build(root)?;
    let mut list = vec!["bench".to_string(), "--out".into(), args.out.display().to_string()];
    list.extend(args.extra);
    let (ok, secs) = run_timed(binary(root, &list)?, "the E-step/M-step benchmark")?;
    finish(root, &args.out, ok, secs)
}

fn finish(root: &Path, out: &Path, ok: bool, secs: f64) -> Result<ExitCode> {
    let report = root.join(out).join("report.md");
    if !ok {
        eprintln!("xtask: diem-manifold failed after {secs:.0} s");
        return Ok(ExitCode::FAILURE);
    }
    println!("xtask: finished in {secs:.0} s (excluding the build)");
    println!("xtask: report: {}", report.display());
    Ok(ExitCode::SUCCESS)
}
