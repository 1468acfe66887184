//! `cargo xtask`: project automation for diem.
//!
//! Every command that runs cargo first makes sure libtorch is available (see [`torch::setup`]) and passes
//! the variables that build and run against it, so nobody has to export anything by hand.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod dist_bench;
mod experiments;
mod gpu;
mod manifold;
mod mpi;
mod pipelines;
mod python;
mod summary;
mod threads_bench;
mod torch;
mod train_bench;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// diem's project automation (`cargo xtask <command>`).
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make libtorch available: use $LIBTORCH if set, else install torch==2.11.0 into ./.venv (idempotent).
    Setup,
    /// Print the `export` lines that let plain `cargo build/test/run` use the project's libtorch.
    Env,
    /// Setup, then `cargo fmt --check`, clippy and rustdoc with warnings denied, and `cargo test --workspace`.
    Test {
        /// Skip the formatting, clippy and rustdoc checks (run the tests only).
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run any cargo command with the libtorch environment set, e.g. `cargo xtask cargo bench -p diem-linalg`.
    Cargo {
        /// The cargo arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The manifold experiment (docs/method.md §9a): reduced CPU run by default, `--paper` or `--ref` for full scale.
    ReproduceManifold(manifold::ReproduceArgs),
    /// The README's first command: the reduced manifold DiEM run (minutes on a CPU), written to runs/demo/.
    Demo(manifold::DemoArgs),
    /// Benchmarks that print a markdown table and write it under runs/.
    Bench {
        /// What to benchmark.
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// The paper's Figure 2 (docs/method.md §10) into runs/figure2/: reduced sizes, `--full` for the paper's.
    Figure2(experiments::StudyArgs),
    /// Posterior samplers vs the exact mixture posterior for d = 2..64 (beyond the paper), into runs/sweep/;
    /// `--frontier [--quick]`: divergence against wall time, diem vs azula 0.11.1, into runs/frontier/.
    Sweep(experiments::SweepArgs),
    /// Corrupted CIFAR-10 (docs/method.md §9b): read or download the binary distribution, write observation sets.
    PrepareCifar(pipelines::Forwarded),
    /// Corrupted CIFAR-10 DiEM (`--rho 0.75 [--paper | --tiny] [--inception PATH]`), per-lap grids, FID/IS.
    ReproduceCifar(pipelines::Forwarded),
    /// fastMRI knee single-coil (docs/method.md §9c): HDF5 slices 10–40, normalization, k-space observations.
    PrepareFastmri(pipelines::Forwarded),
    /// Accelerated-MRI DiEM (`[--paper | --tiny]`): pixel-shuffle U-Net, MMPS CG 3, DDPM 64.
    ReproduceFastmri(pipelines::Forwarded),
    /// The four-task posterior benchmark (docs/method.md §9d): `--prior DIR --images DIR`, Table 4 and cost table.
    PosteriorBench(pipelines::Forwarded),
    /// Only the Python package's tests: its dev wheel in a throwaway venv, then pytest (a step of `test`).
    TestPython,
    /// Build the Python package's wheel (`python/`, maturin) into `target/wheels/<profile>/`.
    Wheel(python::WheelArgs),
    /// Build and pack the CUDA test binaries, pipelines and benches for a GPU machine without cargo (.device/).
    GpuPack(gpu::PackArgs),
}

/// The targets of `cargo xtask bench`.
#[derive(Subcommand)]
enum BenchTarget {
    /// One reduced manifold lap: E-step and M-step time and GFLOP/s against the measured matmul peak.
    Em(manifold::BenchEmArgs),
    /// Posterior sampling (DDIM, DPS, MMPS 1/3) against azula 0.11.1: samples/s and peak memory.
    Posterior(experiments::BenchPosteriorArgs),
    /// `diem fit` on 1 and 2 MPI ranks and on 2 threads: the E-step's and the M-step's scaling.
    Dist(dist_bench::BenchDistArgs),
    /// `diem.posterior` against azula's MMPS from Python, one PyTorch module: samples/s and peak memory.
    Python(python::BenchPythonArgs),
    /// One M-step training step, diem vs PyTorch, on the manifold MLP and a small U-Net: time per step.
    Train(train_bench::BenchTrainArgs),
    /// The manifold E-step alone and beside CPU hogs, with the old and the new thread settings.
    Threads(threads_bench::BenchThreadsArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's folder).
fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask is not inside a workspace")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = workspace_root()?;
    match cli.command {
        Cmd::Setup => {
            let env = torch::setup(&root)?;
            match &env.source {
                torch::Source::Libtorch(p) => println!("libtorch: {} (from LIBTORCH)", p.display()),
                torch::Source::Venv(v) => {
                    println!("libtorch: PyTorch {} in {}", torch::TORCH_VERSION, v.display())
                }
            }
            println!("runtime libraries: {}", env.lib_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Env => {
            let env = torch::setup(&root)?;
            print!("{}", env.export_lines());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { no_lint, args } => test(&root, no_lint, &args),
        Cmd::Cargo { args } => {
            let env = torch::setup(&root)?;
            let status = cargo(&root, &env, &args)?.status().context("cannot run cargo")?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::ReproduceManifold(args) => manifold::reproduce(&root, args),
        Cmd::Demo(args) => manifold::demo(&root, args),
        Cmd::Bench { target } => match target {
            BenchTarget::Em(args) => manifold::bench_em(&root, args),
            BenchTarget::Posterior(args) => experiments::bench_posterior(&root, &args),
            BenchTarget::Dist(args) => dist_bench::bench(&root, &args),
            BenchTarget::Python(args) => python::bench(&root, &args),
            BenchTarget::Train(args) => train_bench::bench(&root, &args),
            BenchTarget::Threads(args) => threads_bench::bench(&root, &args),
        },
        Cmd::Figure2(args) => experiments::study(&root, "figure2", &args),
        Cmd::Sweep(args) => experiments::sweep(&root, &args),
        Cmd::PrepareCifar(args) => pipelines::run(&root, pipelines::PREPARE_CIFAR, &args),
        Cmd::ReproduceCifar(args) => pipelines::run(&root, pipelines::REPRODUCE_CIFAR, &args),
        Cmd::PrepareFastmri(args) => pipelines::run(&root, pipelines::PREPARE_FASTMRI, &args),
        Cmd::ReproduceFastmri(args) => pipelines::run(&root, pipelines::REPRODUCE_FASTMRI, &args),
        Cmd::PosteriorBench(args) => pipelines::run(&root, pipelines::POSTERIOR_BENCH, &args),
        Cmd::GpuPack(args) => gpu::pack(&root, &args),
        Cmd::Wheel(args) => python::wheel(&root, &args),
        Cmd::TestPython => {
            let env = torch::setup(&root)?;
            let mut totals = summary::TestTotals::default();
            let ok = python::pytest(&root, &env, &mut totals)?;
            println!("{}", totals.closing_line());
            Ok(if ok && totals.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Writes `bytes` to `path` with the project's one atomic writer (`diem_fs`: temporary file with the process id,
/// fsync, rename), so a reader never sees half a file and an interrupted write leaves the previous version intact.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    diem_fs::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A `cargo` command in the workspace root with the libtorch environment applied.
fn cargo<S: AsRef<std::ffi::OsStr>>(root: &Path, env: &torch::TorchEnv, args: &[S]) -> Result<Command> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root).args(args);
    env.apply(&mut cmd)?;
    Ok(cmd)
}

/// Runs one checking step, failing with its name when it fails.
fn step(name: &str, mut cmd: Command) -> Result<()> {
    let start = Instant::now();
    eprintln!("xtask: {name}");
    let status = cmd.status().with_context(|| format!("cannot start {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    eprintln!("xtask: {name} ok ({:.0?})", start.elapsed());
    Ok(())
}

fn test(root: &Path, no_lint: bool, extra: &[String]) -> Result<ExitCode> {
    let start = Instant::now();
    let env = torch::setup(root)?;
    // The MPI and NCCL back ends are linted, documented and tested when Open MPI is (or can be made)
    // available; otherwise the rest is, and the MPI tests say they are skipped.
    let features = mpi::ensure().cargo_args();
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(features.iter().cloned());
        all
    };
    if !no_lint {
        step("cargo fmt --check", cargo(root, &env, &["fmt", "--all", "--check"])?)?;
        let mut clippy = with(&["clippy", "--workspace", "--all-targets"]);
        clippy.extend(["--", "-D", "warnings"].map(String::from));
        step("cargo clippy", cargo(root, &env, &clippy)?)?;
        // Broken intra-doc links and HTML in doc comments are errors too: the docs are part of the API.
        let mut doc = cargo(root, &env, &with(&["doc", "--workspace", "--no-deps"]))?;
        doc.env("RUSTDOCFLAGS", "-D warnings");
        step("cargo doc", doc)?;
    }
    let mut args = with(&["test", "--workspace", "--no-fail-fast"]);
    args.extend(extra.iter().cloned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = cargo(root, &env, &args)?;
    // libtest already runs one test per core; libtorch's own thread pool on top of that oversubscribes small
    // machines so badly (spinning OpenMP workers) that tests run 10-40x slower. One intra-op thread per test
    // unless the caller sets OMP_NUM_THREADS.
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout was not captured")?;
    let mut totals = summary::TestTotals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().context("cargo test did not finish")?;
    // The Python package: its dev wheel in a throwaway venv, then pytest (a skip reason where impossible).
    let python_ok = python::pytest(root, &env, &mut totals)?;
    println!();
    println!("xtask: {} test suites in {:.0?}", totals.suites, start.elapsed());
    println!("{}", totals.closing_line());
    if !status.success() || !python_ok || totals.failed > 0 {
        eprintln!("xtask: cargo test failed ({status})");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
