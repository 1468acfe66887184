//! Synthetic studies and the posterior-sampling benchmark: `cargo xtask figure2`, `cargo xtask sweep` and
//! `cargo xtask bench posterior`. Each builds the `diem-benches` binaries in release mode with the libtorch
//! environment and runs them; the benchmark also runs azula (installed into `.venv` when missing).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::torch::{self, TorchEnv};

/// The azula release the benchmark compares against.
pub const AZULA_VERSION: &str = "0.11.1";
/// The torchvision release built for torch [`torch::TORCH_VERSION`]; installed before azula so that pip does
/// not pull the newest torchvision, which would upgrade torch and break tch.
pub const TORCHVISION_VERSION: &str = "0.26.0";

/// Builds one binary of `package` in release mode and returns its path (in `$CARGO_TARGET_DIR` or
/// `target/`).
pub fn build_release_bin(root: &Path, env: &TorchEnv, package: &str, bin: &str) -> Result<PathBuf> {
    let status = crate::cargo(root, env, &["build", "--release", "-p", package, "--bin", bin])?
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building {bin} ({package}) failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join(bin))
}

/// Builds one `diem-benches` binary in release mode and returns its path.
fn build_bin(root: &Path, env: &TorchEnv, bin: &str) -> Result<PathBuf> {
    build_release_bin(root, env, "diem-benches", bin)
}

/// A command for a built binary, run from the workspace root with the libtorch environment.
fn bin_command(root: &Path, env: &TorchEnv, path: &Path) -> Result<Command> {
    let mut cmd = Command::new(path);
    cmd.current_dir(root);
    env.apply(&mut cmd)?;
    Ok(cmd)
}

/// Arguments of `cargo xtask figure2` and `cargo xtask sweep`.
#[derive(clap::Args)]
pub struct StudyArgs {
    /// The paper's sizes (GPU scale); without it, reduced sizes that finish in minutes on a CPU.
    #[arg(long)]
    full: bool,
    /// Extra arguments for the study binary after `--` (e.g. `-- --seeds 2`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Arguments of `cargo xtask sweep`: the sweep, or with `--frontier` the accuracy-per-second comparison against
/// azula (issue 14). The frontier lives here because it is the sweep's problem and divergence with wall time
/// added; it borrows `bench posterior`'s azula installation and interleaving.
#[derive(clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Divergence against wall time at d = 8 and 32 for diem's samplers × MMPS(1, 3) and TDS, and azula 0.11.1's
    /// DDIM and DDPM × MMPS(1, 3), runs interleaved; CSV, JSON lines, PNG and markdown in `--out`.
    #[arg(long, conflicts_with = "full")]
    frontier: bool,
    /// With `--frontier`: the quick preset (N = 64, up to 32 steps; about a minute).
    #[arg(long, requires = "frontier")]
    quick: bool,
    /// With `--frontier`: repetitions of every run (default 3).
    #[arg(long, requires = "frontier")]
    repeat: Option<usize>,
    /// With `--frontier`: intra-op threads of both sides (tch and torch; default 1).
    #[arg(long, default_value_t = 1, requires = "frontier")]
    threads: usize,
    /// With `--frontier`: diem's side only (no python, no azula install).
    #[arg(long, requires = "frontier")]
    no_azula: bool,
    /// With `--frontier`: the output folder.
    #[arg(long, default_value = "runs/frontier", requires = "frontier")]
    out: PathBuf,
}

/// `cargo xtask sweep`: the sweep study, or the frontier with `--frontier`.
pub fn sweep(root: &Path, args: &SweepArgs) -> Result<ExitCode> {
    if args.frontier {
        frontier(root, args)
    } else {
        study(root, "sweep", &args.study)
    }
}

/// The 1-, 5- and 15-minute load averages from `/proc/loadavg`.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// `cargo xtask sweep --frontier`: prepares the problem, then for every repetition and dimension runs diem's
/// configurations and azula's in two processes, alternating which goes first, and writes the report.
fn frontier(root: &Path, args: &SweepArgs) -> Result<ExitCode> {
    let env = if args.no_azula { torch::setup(root)? } else { ensure_azula(root)? };
    let bin = build_bin(root, &env, "frontier")?;
    let dir = root.join(&args.out);
    let threads = args.threads.max(1).to_string();
    let run = |mut cmd: Command, what: &str| -> Result<()> {
        for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env(var, &threads);
        }
        let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(())
    };
    let mut prep = bin_command(root, &env, &bin)?;
    prep.arg("prepare").arg("--out").arg(&dir);
    if args.quick {
        prep.arg("--quick");
    }
    if let Some(r) = args.repeat {
        prep.args(["--repeat", &r.to_string()]);
    }
    run(prep, "frontier prepare")?;
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let dims: Vec<i64> =
        config["dims"].as_array().context("config.json: dims")?.iter().filter_map(|v| v.as_i64()).collect();
    let repeat = config["repeat"].as_u64().context("config.json: repeat")?;
    let python = match &env.source {
        torch::Source::Venv(venv) => Some(venv.join("bin").join("python")),
        _ => None,
    };
    let load_before = load_average();
    eprintln!("xtask: frontier, load average before: {}", load_before.as_deref().unwrap_or("n/a"));
    let start = std::time::Instant::now();
    for rep in 0..repeat {
        for &d in &dims {
            let (rep_s, d_s) = (rep.to_string(), d.to_string());
            let mut ours = bin_command(root, &env, &bin)?;
            ours.arg("run").arg("--dir").arg(&dir).args([
                "--dim",
                &d_s,
                "--rep",
                &rep_s,
                "--threads",
                &threads,
            ]);
            let theirs = match (&python, args.no_azula) {
                (Some(python), false) => {
                    let mut cmd = bin_command(root, &env, python)?;
                    cmd.arg(root.join("benches").join("python").join("azula_frontier.py"))
                        .arg("--dir")
                        .arg(&dir);
                    cmd.args(["--dim", &d_s, "--rep", &rep_s, "--threads", &threads]);
                    Some(cmd)
                }
                _ => None,
            };
            eprintln!(
                "xtask: frontier d = {d}, repetition {}/{repeat} [{:.0} s]",
                rep + 1,
                start.elapsed().as_secs_f64()
            );
            // Alternate which side goes first, so that a slow stretch of the machine hits both.
            match theirs {
                Some(theirs) if rep % 2 == 1 => {
                    run(theirs, "azula_frontier.py")?;
                    run(ours, "frontier run")?;
                }
                Some(theirs) => {
                    run(ours, "frontier run")?;
                    run(theirs, "azula_frontier.py")?;
                }
                None => run(ours, "frontier run")?,
            }
        }
    }
    let load_after = load_average();
    let mut report = bin_command(root, &env, &bin)?;
    report.arg("report").arg("--dir").arg(&dir);
    run(report, "frontier report")?;
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let machine = format!(
        "\nMachine: {cores} cores, {threads} intra-op thread(s) on both sides; load average (1, 5, 15 min) \
         before {}, after {}; measurement {:.0} s.\n",
        load_before.as_deref().unwrap_or("n/a"),
        load_after.as_deref().unwrap_or("n/a"),
        start.elapsed().as_secs_f64()
    );
    let md_path = dir.join("frontier.md");
    let mut md =
        std::fs::read_to_string(&md_path).with_context(|| format!("reading {}", md_path.display()))?;
    md.push_str(&machine);
    crate::write_atomic(&md_path, md.as_bytes())?;
    println!("{machine}");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `cargo xtask bench posterior`.
#[derive(clap::Args)]
pub struct BenchPosteriorArgs {
    /// Fewer samples and steps (N = 1024, T = 32) for a first look.
    #[arg(long)]
    quick: bool,
    /// Number of samples N (default 8192).
    #[arg(long)]
    samples: Option<i64>,
    /// Sampler steps T (default 256).
    #[arg(long)]
    steps: Option<usize>,
    /// libtorch intra-op threads on both sides (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The device of both sides: `cpu` or `cuda` (diem reads it from `DIEM_DEVICE`, azula from `--device`).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
    /// Runs per implementation and method, interleaved (diem, azula, diem, ...); the report gives medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// `cargo xtask figure2` / `cargo xtask sweep`: runs the study binary `bin` (reduced sizes unless `--full`).
pub fn study(root: &Path, bin: &str, args: &StudyArgs) -> Result<ExitCode> {
    let (full, extra) = (args.full, &args.args);
    let env = torch::setup(root)?;
    let path = build_bin(root, &env, bin)?;
    let mut cmd = bin_command(root, &env, &path)?;
    if full {
        cmd.arg("--full");
    }
    cmd.args(extra);
    // libtorch's OpenMP pool oversubscribes small shared machines badly; one intra-op thread unless set.
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", "1");
    }
    eprintln!(
        "xtask: {} {}",
        path.display(),
        if full { "--full" } else { "(reduced sizes; --full for the paper's)" }
    );
    let status = cmd.status().with_context(|| format!("cannot run {}", path.display()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether `<venv>` holds `<name>-<version>.dist-info`.
fn has_dist(venv: &Path, name: &str, version: &str) -> bool {
    let lib = venv.join("lib");
    let Ok(entries) = std::fs::read_dir(&lib) else { return false };
    entries
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("site-packages").join(format!("{name}-{version}.dist-info")).is_dir())
}

/// Installs azula (and the torchvision matching the pinned torch) into `.venv` unless already there, then
/// checks that torch is still the pinned release.
fn ensure_azula(root: &Path) -> Result<TorchEnv> {
    let env = torch::setup(root)?;
    let torch::Source::Venv(venv) = &env.source else {
        bail!("the azula comparison needs the project's .venv (unset LIBTORCH so `cargo xtask setup` creates it)");
    };
    if !has_dist(venv, "azula", AZULA_VERSION) {
        eprintln!("xtask: installing azula {AZULA_VERSION} into {}", venv.display());
        torch::pip_install(venv, &format!("torchvision=={TORCHVISION_VERSION}"))?;
        torch::pip_install(venv, &format!("azula=={AZULA_VERSION}"))?;
    }
    torch::setup(root)
}

/// One benchmark result line (parsed from a child's JSON output).
#[derive(Debug, Clone)]
struct Row {
    samples_per_second: f64,
    seconds: f64,
    cpu_seconds: Option<f64>,
    peak_rss_mib: Option<f64>,
    base_rss_mib: Option<f64>,
    finite: Option<bool>,
}

fn run_json(mut cmd: Command, what: &str) -> Result<Row> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON line")?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{what}: bad JSON {line}"))?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    Ok(Row {
        samples_per_second: num("samples_per_second").context("samples_per_second missing")?,
        seconds: num("seconds").context("seconds missing")?,
        cpu_seconds: num("cpu_seconds"),
        peak_rss_mib: num("peak_rss_mib"),
        base_rss_mib: num("base_rss_mib"),
        finite: v.get("finite").and_then(serde_json::Value::as_bool),
    })
}

/// The run with the median wall time of `runs` (the upper median for an even count); `None` when empty.
fn median_run(mut runs: Vec<Row>) -> Option<Row> {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid)
}

/// `min–max` of the runs' wall times, for the report's spread column.
fn spread(runs: &[Row]) -> String {
    let lo = runs.iter().map(|r| r.seconds).fold(f64::INFINITY, f64::min);
    let hi = runs.iter().map(|r| r.seconds).fold(0.0, f64::max);
    format!("{lo:.1}–{hi:.1}")
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |m| format!("{m:.0}"))
}

/// The methods `bench posterior` compares, in report order.
const METHODS: [&str; 4] = ["ddim", "dps", "mmps1", "mmps3"];

/// The glibc setting of the memory runs: a fixed mmap threshold (64 KiB), so freed tensors leave the RSS.
const LIVE_ENV: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "65536");

/// Sampler steps of the memory runs (memory is flat in the number of steps).
const LIVE_STEPS: usize = 16;

/// Peak RSS − RSS before sampling.
fn rss_growth(r: &Row) -> Option<f64> {
    r.peak_rss_mib.zip(r.base_rss_mib).map(|(p, q)| p - q)
}

/// The line that checks issue 6's memory target: diem's MMPS(1) and MMPS(3) peak over diem's DPS peak, as whole
/// process and as growth during sampling; empty when a method is missing.
fn memory_ratios(rows: &[(&str, Row, Row)], what: &str) -> String {
    let find = |m: &str| rows.iter().find(|r| r.0 == m).map(|r| r.1.clone());
    let (Some(dps), Some(mmps1), Some(mmps3)) = (find("dps"), find("mmps1"), find("mmps3")) else {
        return String::new();
    };
    let whole = |x: &Row| x.peak_rss_mib.zip(dps.peak_rss_mib).map(|(p, q)| p / q);
    let growth = |x: &Row| rss_growth(x).zip(rss_growth(&dps)).map(|(p, q)| p / q);
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |r| format!("{r:.3}×"));
    format!(
        "\nPeak memory of diem's MMPS relative to diem's DPS (target ≤ 1.15×), {what}: MMPS(1) {}, MMPS(3) {}; \
         growth during sampling (peak − RSS before sampling) MMPS(1) {}, MMPS(3) {}.\n",
        fmt(whole(&mmps1)),
        fmt(whole(&mmps3)),
        fmt(growth(&mmps1)),
        fmt(growth(&mmps3)),
    )
}

/// `cargo xtask bench posterior`: ours vs azula 0.11.1, each method in its own process.
pub fn bench_posterior(root: &Path, args: &BenchPosteriorArgs) -> Result<ExitCode> {
    let (quick, samples, steps) = (args.quick, args.samples, args.steps);
    let env = ensure_azula(root)?;
    let torch::Source::Venv(venv) = &env.source else { bail!("no .venv") };
    let python = venv.join("bin").join("python");
    let (n, t) =
        (samples.unwrap_or(if quick { 1024 } else { 8192 }), steps.unwrap_or(if quick { 32 } else { 256 }));
    let bin = build_bin(root, &env, "bench_posterior")?;
    let dir = root.join("runs").join("bench-posterior");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let problem = dir.join("problem.safetensors");
    let mut prep = bin_command(root, &env, &bin)?;
    prep.args(["prepare", "--samples", &n.to_string(), "--out"]).arg(&problem);
    let status = prep.status().context("cannot run bench_posterior prepare")?;
    if !status.success() {
        bail!("bench_posterior prepare failed ({status})");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |p| p.get()))
        .to_string();
    let repeat = args.repeat.max(1);
    let args_device = args.device.clone();
    let mut rows = Vec::new();
    let mut spreads = Vec::new();
    let ours_cmd = |method: &str, steps: &str| -> Result<Command> {
        let mut cmd = bin_command(root, &env, &bin)?;
        cmd.env("DIEM_DEVICE", &args_device).arg("run").arg("--problem").arg(&problem);
        cmd.args(["--method", method, "--steps", steps, "--threads", &threads]);
        Ok(cmd)
    };
    let theirs_cmd = |method: &str, steps: &str| -> Result<Command> {
        let mut cmd = bin_command(root, &env, &python)?;
        cmd.arg(root.join("benches").join("python").join("azula_posterior.py"))
            .arg("--problem")
            .arg(&problem);
        cmd.args(["--method", method, "--steps", steps, "--threads", &threads, "--device", &args_device]);
        Ok(cmd)
    };
    let steps_arg = t.to_string();
    for method in METHODS {
        let (mut ours_runs, mut their_runs) = (Vec::new(), Vec::new());
        for rep in 1..=repeat {
            eprintln!("xtask: diem  {method} (N = {n}, T = {t}), run {rep}/{repeat}");
            ours_runs.push(run_json(ours_cmd(method, &steps_arg)?, &format!("diem {method}"))?);
            eprintln!("xtask: azula {method}, run {rep}/{repeat}");
            their_runs.push(run_json(theirs_cmd(method, &steps_arg)?, &format!("azula {method}"))?);
        }
        spreads.push((spread(&ours_runs), spread(&their_runs)));
        let a = median_run(ours_runs).context("no diem run")?;
        let b = median_run(their_runs).context("no azula run")?;
        rows.push((method, a, b));
    }
    // Memory runs: with a fixed mmap threshold glibc returns every large block to the system when it is freed,
    // so peak RSS follows the live tensors instead of the heap glibc keeps for reuse. Sampling memory is flat in
    // the number of steps, so a short run reaches the peak.
    let live_steps = t.min(LIVE_STEPS).to_string();
    let mut live = Vec::new();
    for method in METHODS {
        eprintln!("xtask: memory run, {method} (T = {live_steps}, {}={})", LIVE_ENV.0, LIVE_ENV.1);
        let mut ours = ours_cmd(method, &live_steps)?;
        ours.env(LIVE_ENV.0, LIVE_ENV.1);
        let mut theirs = theirs_cmd(method, &live_steps)?;
        theirs.env(LIVE_ENV.0, LIVE_ENV.1);
        let a = run_json(ours, &format!("diem {method} (memory run)"))?;
        let b = run_json(theirs, &format!("azula {method} (memory run)"))?;
        live.push((method, a, b));
    }
    let mut md = format!(
        "# Posterior sampling: diem vs azula {AZULA_VERSION}\n\nManifold MLP (5 → 256×3 → 5, random weights), N = {n}, \
         d = 5, m = 2, T = {t} steps, device {args_device}, {threads} threads, float32; each method in its own process, {repeat} runs \
         each, interleaved (diem, azula, diem, ...); the median run by wall time is shown, with the min–max wall \
         time of all runs. CPU s = user + system seconds of the sampling loop, all threads (less sensitive than \
         wall time to other load on the machine).\n\n\
         | method | diem samples/s | azula samples/s | diem / azula | diem s (min–max) | azula s (min–max) | diem CPU s | azula CPU s | azula CPU / diem CPU | diem peak RSS MiB (Δ) | azula peak RSS MiB (Δ) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for ((m, a, b), (sa, sb)) in rows.iter().zip(&spreads) {
        let cpu = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |c| format!("{c:.1}"));
        let cpu_ratio =
            b.cpu_seconds.zip(a.cpu_seconds).map_or_else(|| "n/a".into(), |(x, y)| format!("{:.2}×", x / y));
        md.push_str(&format!(
            "| {m} | {:.0} | {:.0} | {:.2}× | {:.1} ({sa}) | {:.1} ({sb}) | {} | {} | {cpu_ratio} | {} ({}) | {} ({}){} |\n",
            a.samples_per_second,
            b.samples_per_second,
            a.samples_per_second / b.samples_per_second,
            a.seconds,
            b.seconds,
            cpu(a.cpu_seconds),
            cpu(b.cpu_seconds),
            mib(a.peak_rss_mib),
            mib(rss_growth(a)),
            mib(b.peak_rss_mib),
            mib(rss_growth(b)),
            if b.finite == Some(false) { ", non-finite output" } else { "" }
        ));
    }
    md.push_str(&memory_ratios(&rows, "whole-process peak RSS"));
    md.push_str(&format!(
        "\n## Live memory\n\nOne more run per method (T = {live_steps}) with `{}={}`: glibc then returns every \
         block of 64 KiB or more to the system when it is freed, so peak RSS follows the live tensors rather than \
         the heap it keeps for reuse (the figures above). Both sides run under the same setting.\n\n\
         | method | diem peak MiB (Δ) | azula peak MiB (Δ) |\n| --- | ---: | ---: |\n",
        LIVE_ENV.0, LIVE_ENV.1
    ));
    for (m, a, b) in &live {
        md.push_str(&format!(
            "| {m} | {} ({}) | {} ({}) |\n",
            mib(a.peak_rss_mib),
            mib(rss_growth(a)),
            mib(b.peak_rss_mib),
            mib(rss_growth(b))
        ));
    }
    md.push_str(&memory_ratios(&live, "live-memory peak RSS"));
    let report = dir.join("report.md");
    crate::write_atomic(&report, md.as_bytes())?;
    println!("{md}");
    println!("wrote {}", report.display());
    Ok(ExitCode::SUCCESS)
}
