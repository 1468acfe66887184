//! `cargo xtask bench threads`: the manifold E-step alone and beside CPU hogs (one busy-loop process per
//! core), under libtorch's previous thread settings and under the binaries' defaults
//! (`diem_models::threads::init_process_threads`: `OMP_WAIT_POLICY=PASSIVE`), interleaved. On a shared
//! machine the E-step should lose throughput in proportion to the cores the hogs take, not collapse.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::experiments::build_release_bin;
use crate::torch;
use crate::train_bench::load_average;

/// Arguments of `cargo xtask bench threads`.
#[derive(clap::Args)]
pub struct BenchThreadsArgs {
    /// Runs per setting and condition, interleaved; the report gives medians.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Observations of the E-step (the demo preset's MLP, PC sampler and MMPS).
    #[arg(long, default_value_t = 2048)]
    points: usize,
    /// Sampler steps of the E-step.
    #[arg(long, default_value_t = 16)]
    sampler_steps: usize,
    /// Busy-loop processes beside the E-step (default: one per core).
    #[arg(long)]
    hogs: Option<usize>,
}

/// The settings compared: (name, environment). Each also gets `DIEM_NO_REEXEC` or not, as listed.
const SETTINGS: [(&str, &[(&str, &str)]); 4] = [
    ("before: libtorch default threads, libgomp default wait (spin ~300k)", &[("DIEM_NO_REEXEC", "1")]),
    ("before (xtask's old default): 1 thread", &[("DIEM_NO_REEXEC", "1"), ("OMP_NUM_THREADS", "1")]),
    ("after: default threads, OMP_WAIT_POLICY=PASSIVE (the binaries' default)", &[]),
    ("after, 1 thread: DIEM_THREADS=1, PASSIVE", &[("DIEM_THREADS", "1")]),
];

/// CPU hogs: `n` `sh` busy loops, killed on drop.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start(n: usize) -> Result<Self> {
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start a busy loop")?;
            children.push(child);
        }
        Ok(Self(children))
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the E-step benchmark once and returns the E-step's wall seconds (the report's `| E-step |` row).
fn estep_seconds(mut cmd: Command) -> Result<(f64, i32)> {
    let out = cmd.output().context("cannot run diem-manifold bench")?;
    if !out.status.success() {
        bail!("diem-manifold bench failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("| E-step |")).context("no E-step row in the report")?;
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let secs: f64 = cells.get(3).context("short E-step row")?.parse().context("E-step time")?;
    let err = String::from_utf8_lossy(&out.stderr);
    let threads = err
        .lines()
        .find_map(|l| l.split(", ").last().and_then(|t| t.strip_suffix(" libtorch threads")))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok((secs, threads))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `cargo xtask bench threads`.
pub fn bench(root: &Path, args: &BenchThreadsArgs) -> Result<ExitCode> {
    let env = torch::setup(root)?;
    let bin = build_release_bin(root, &env, "diem-manifold", "diem-manifold")?;
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let hogs = args.hogs.unwrap_or(cores);
    let repeat = args.repeat.max(1);
    let dir = root.join("runs").join("bench-threads");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let load_before = load_average();
    // [setting][condition] → runs.
    let mut times = vec![[Vec::new(), Vec::new()]; SETTINGS.len()];
    let mut threads = vec![0; SETTINGS.len()];
    for rep in 1..=repeat {
        for (s, (name, vars)) in SETTINGS.iter().enumerate() {
            for (c, with_hogs) in [false, true].into_iter().enumerate() {
                eprintln!(
                    "xtask: {name}, {}, run {rep}/{repeat}",
                    if with_hogs { "beside hogs" } else { "alone" }
                );
                let mut cmd = Command::new(&bin);
                env.apply(&mut cmd)?;
                cmd.current_dir(root).env("DIEM_DEVICE", "cpu");
                for k in
                    ["OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "DIEM_THREADS", "DIEM_NO_REEXEC"]
                {
                    cmd.env_remove(k);
                }
                cmd.envs(vars.iter().copied());
                cmd.args(["bench", "--out"]).arg(dir.join("em"));
                cmd.args(["--points", &args.points.to_string()]);
                cmd.args(["--sampler-steps", &args.sampler_steps.to_string()]);
                cmd.args(["--steps", "1", "--batch", "64", "--peak-size", "256"]);
                let _hogs = if with_hogs { Some(Hogs::start(hogs)?) } else { None };
                let (secs, t) = estep_seconds(cmd)?;
                times[s][c].push(secs);
                threads[s] = t;
            }
        }
    }
    let mut md = format!(
        "# Threads on a shared machine: the manifold E-step alone and beside {hogs} busy loops\n\n\
         `diem-manifold bench` E-step (demo preset: MLP 5 → 3×256 → 5, PC sampler, MMPS), {} observations, {} sampler \
         steps, CPU with {cores} cores; E-step wall time, median of {repeat} runs, interleaved (every setting alone \
         and beside the hogs, then again). Load average (1, 5, 15 min) before: {load_before}, after: {}.\n\n\
         | setting | threads | alone s (min–max) | beside hogs s (min–max) | slowdown | in proportion |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        args.points,
        args.sampler_steps,
        load_average()
    );
    for (s, (name, _)) in SETTINGS.iter().enumerate() {
        let cell = |v: &Vec<f64>| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{:.2} ({lo:.2}–{hi:.2})", median(v.clone()))
        };
        let (alone, hog) = (median(times[s][0].clone()), median(times[s][1].clone()));
        // t threads beside h busy loops on c cores: each runnable thread gets c / (t + h) of a core.
        let t = threads[s].max(1) as f64;
        let fair = ((t + hogs as f64) / cores as f64).max(1.0);
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {:.2}× | {fair:.2}× |\n",
            threads[s],
            cell(&times[s][0]),
            cell(&times[s][1]),
            hog / alone
        ));
    }
    md.push_str(
        "\n\"In proportion\": t threads beside h busy loops on c cores get c / (t + h) of a core each under a fair \
         scheduler, so the E-step should slow down by about (t + h) / c; far beyond that is the spinning collapse \
         (idle OpenMP workers taking the cores that the working thread needs).\n",
    );
    let report = dir.join("report.md");
    crate::write_atomic(&report, md.as_bytes())?;
    println!("{md}");
    println!("wrote {}", report.display());
    Ok(ExitCode::SUCCESS)
}
