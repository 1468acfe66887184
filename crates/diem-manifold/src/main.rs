//! The manifold experiment of docs/method.md §9a from the command line (the driver behind `cargo xtask demo`,
//! `cargo xtask reproduce-manifold` and `cargo xtask bench em`).
//!
//! ```text
//! cargo xtask cargo run --release -p diem-manifold -- run --preset demo --out runs/demo --overwrite
//! cargo xtask cargo run --release -p diem-manifold -- bench --out runs/bench-em
//! ```
//!
//! Commands:
//! - `run`: generate the data, run DiEM and write `report.md`, corner plots and the divergence curve.
//!   Options: `--preset paper|reference|demo|tiny` (default demo), `--out DIR`, `--resume`, `--overwrite`,
//!   `--progress`, and overrides `--points N`, `--laps K`, `--steps S` (per lap), `--batch B`,
//!   `--sampler-steps T`, `--cg N`, `--hidden W,W,..`, `--gaussian-iterations N`, `--gaussian-steps T`,
//!   `--metric-points M`, `--lambda λ`, `--prior-steps T`, `--seed N`.
//! - `bench`: time one lap (E-step, M-step) of the preset (default demo) and compare the achieved GFLOP/s
//!   with the f32 matmul peak measured in the same process; writes `DIR/report.md`. Options: `--preset`,
//!   `--out DIR`, `--peak-size N`, and the same overrides.
//!
//! The device is CUDA when available, else the CPU (`DIEM_DEVICE=cpu|cuda|cuda:N` overrides).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use diem_em::SolverSpec;
use diem_manifold::{bench_em, run_experiment, ManifoldConfig, RunOptions};
use diem_models::NetworkConfig;

const USAGE: &str = "usage: diem-manifold (run | bench) [--preset paper|reference|demo|tiny] [--out DIR] \
[--resume] [--overwrite] [--progress] [--points N] [--laps K] [--steps S] [--batch B] [--sampler-steps T] \
[--cg N] [--hidden W,W,..] [--gaussian-iterations N] [--gaussian-steps T] [--metric-points M] [--lambda L] \
[--prior-steps T] [--seed N] [--peak-size N]";

struct Args {
    command: String,
    config: ManifoldConfig,
    out: Option<PathBuf>,
    resume: bool,
    overwrite: bool,
    peak_size: i64,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().context(USAGE)?;
    if command == "--help" || command == "-h" {
        println!("{USAGE}");
        std::process::exit(0);
    }
    if command != "run" && command != "bench" {
        bail!("unknown command `{command}`\n{USAGE}");
    }
    let rest: Vec<String> = it.collect();
    // The preset first, so that overrides apply on top of it wherever they appear.
    let preset =
        rest.iter().position(|a| a == "--preset").and_then(|i| rest.get(i + 1)).map_or("demo", |s| s);
    let mut config = ManifoldConfig::preset(preset)?;
    let mut args =
        Args { command, config: config.clone(), out: None, resume: false, overwrite: false, peak_size: 2048 };
    let mut i = 0;
    while i < rest.len() {
        let flag = rest[i].as_str();
        let mut value = || -> Result<&str> {
            i += 1;
            rest.get(i).map(String::as_str).with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag {
            "--preset" => {
                value()?;
            }
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--resume" => args.resume = true,
            "--overwrite" => args.overwrite = true,
            "--progress" => config.em.progress = true,
            "--points" => config.data.points = value()?.parse()?,
            "--laps" => config.em.laps = value()?.parse()?,
            "--steps" => config.em.mstep.steps = value()?.parse()?,
            "--batch" => config.em.mstep.batch_size = value()?.parse()?,
            "--sampler-steps" => {
                let t: usize = value()?.parse()?;
                config.em.estep.sampler = config.em.estep.sampler.with_steps(t);
            }
            "--cg" => {
                let cg = SolverSpec::cg(value()?.parse()?);
                match config.em.estep.posterior.solver_mut() {
                    Some(solver) => *solver = cg,
                    None => anyhow::bail!("--cg: the E-step's posterior method has no solver"),
                }
            }
            "--metric-points" => config.metric.points = value()?.parse()?,
            "--lambda" => config.metric.lambda = value()?.parse()?,
            "--prior-steps" => config.metric.prior_steps = value()?.parse()?,
            "--seed" => config.em.seed = value()?.parse()?,
            "--hidden" => {
                let hidden = value()?.split(',').map(str::parse).collect::<Result<Vec<i64>, _>>()?;
                if let NetworkConfig::Mlp(mlp) = &mut config.em.network {
                    mlp.hidden = hidden;
                }
            }
            "--gaussian-iterations" => config.em.gaussian.iterations = value()?.parse()?,
            "--gaussian-steps" => config.em.gaussian.steps = value()?.parse()?,
            "--peak-size" => args.peak_size = value()?.parse()?,
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
        i += 1;
    }
    args.config = config;
    Ok(args)
}

fn main() -> Result<()> {
    // Before any libtorch call: libgomp's wait policy (a re-execution) and DIEM_THREADS.
    diem_models::init_process_threads();
    let args = parse()?;
    let device = diem_models::device_from_env()?;
    eprintln!(
        "manifold: {} with preset `{}` on {device:?}, {} libtorch threads",
        args.command,
        args.config.preset,
        tch::get_num_threads()
    );
    if args.command == "bench" {
        let out = args.out.unwrap_or_else(|| PathBuf::from("runs/bench-em"));
        let report = bench_em(&args.config, args.peak_size, device)?;
        let text = report.markdown();
        println!("{text}");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join("report.md");
        diem_em::io::write_atomic(&path, text.as_bytes())?;
        eprintln!("manifold: bench report: {}", path.display());
        return Ok(());
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from(format!("runs/manifold-{}", args.config.preset)));
    let options = RunOptions { resume: args.resume, overwrite: args.overwrite, device };
    let summary = run_experiment(&args.config, &out, &options)?;
    if let (Some(first), Some(last)) = (summary.records.first(), summary.records.last()) {
        println!(
            "manifold: Sinkhorn divergence {} → {}: {:.4e} → {:.4e} ({:.1}× lower) in {:.0} s",
            first.label(),
            last.label(),
            first.sinkhorn,
            last.sinkhorn,
            first.sinkhorn / last.sinkhorn,
            summary.seconds
        );
    }
    println!("manifold: report: {}", summary.report.display());
    Ok(())
}
