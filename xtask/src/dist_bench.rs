//! `cargo xtask bench dist`: how the E-step and the M-step scale from 1 to 2 MPI ranks on this machine.
//!
//! Builds `diem` with MPI in release mode, writes a manifold-like observation set (numpy) and a one-lap
//! configuration under `runs/bench-dist/`, then runs `diem fit` as 1 rank × 1 thread, 2 ranks × 1 thread
//! (`mpirun`) and 1 rank × 2 threads, interleaved, `--repeat` times, and reads each run's `estep_seconds` and
//! `mstep_seconds` from `metrics.jsonl`. Prints a markdown table and writes `results.jsonl` and `report.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::torch;

/// Options of `cargo xtask bench dist`.
#[derive(clap::Args, Debug)]
pub struct BenchDistArgs {
    /// Interleaved repeats of the three layouts.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Observations.
    #[arg(long, default_value_t = 4096)]
    observations: usize,
    /// Observations per E-step chunk (the ranks share whole chunks).
    #[arg(long, default_value_t = 512)]
    chunk: usize,
}

/// The observation set: a 1-D curve in R^5 seen through random unit-row 2×5 projections, σ_y = 0.01.
const DATA: &str = r#"
import sys, numpy as np
rng = np.random.default_rng(1)
n = int(sys.argv[2])
z = rng.random(n)
x = np.stack([np.sin(2*np.pi*z), np.cos(2*np.pi*z), 2*z - 1, np.sin(4*np.pi*z), z*z], 1)
a = rng.standard_normal((n, 2, 5)); a /= np.linalg.norm(a, axis=2, keepdims=True)
y = np.einsum("nmd,nd->nm", a, x) + 0.01 * rng.standard_normal((n, 2))
np.savez(sys.argv[1], y=y.astype(np.float32), noise_std=np.float64(0.01),
         operator=np.frombuffer(b"projection", np.uint8), matrix=a.astype(np.float32),
         x_shape=np.array([5], dtype=np.int64))
"#;

/// The three layouts: (name, ranks, threads per rank).
const LAYOUTS: [(&str, usize, usize); 3] =
    [("1 rank × 1 thread", 1, 1), ("2 ranks × 1 thread", 2, 1), ("1 rank × 2 threads", 1, 2)];

/// `cargo xtask bench dist`.
pub fn bench(root: &Path, args: &BenchDistArgs) -> Result<std::process::ExitCode> {
    let env = torch::setup(root)?;
    if crate::mpi::find_on_path("mpirun").is_none() {
        bail!("mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev)");
    }
    let status = crate::cargo(root, &env, &["build", "--release", "-p", "diem-cli", "--features", "mpi"])?
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building diem with MPI failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let diem = target.join("release").join("diem");
    let out = root.join("runs").join("bench-dist");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let obs = out.join("obs.npz");
    let python = match &env.source {
        torch::Source::Venv(v) => v.join("bin").join("python"),
        torch::Source::Libtorch(_) => PathBuf::from("python3"),
    };
    let st = Command::new(&python).args(["-c", DATA]).arg(&obs).arg(args.observations.to_string()).status();
    if !st.is_ok_and(|s| s.success()) {
        bail!("writing {} with {} (numpy) failed", obs.display(), python.display());
    }
    let cfg = out.join("cfg.json");
    write_config(root, &cfg, args.chunk)?;
    let mut rows = Vec::new();
    for r in 0..args.repeat {
        for (name, ranks, threads) in LAYOUTS {
            let dir = out.join(format!("run-{ranks}x{threads}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
            let fit = |cmd: &mut Command| {
                cmd.args(["fit", "--quiet", "--observations"])
                    .arg(&obs)
                    .arg("--config")
                    .arg(&cfg)
                    .arg("--out")
                    .arg(&dir);
            };
            let mut cmd = if ranks == 1 {
                let mut c = Command::new(&diem);
                fit(&mut c);
                c
            } else {
                let mut c = Command::new("mpirun");
                c.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np"])
                    .arg(ranks.to_string())
                    .args(["-x", "OMP_NUM_THREADS", "-x", "DIEM_DEVICE", "-x", "LD_LIBRARY_PATH"])
                    .arg(&diem);
                fit(&mut c);
                c
            };
            env.apply(&mut cmd)?;
            cmd.env("OMP_NUM_THREADS", threads.to_string()).env("DIEM_DEVICE", "cpu");
            let st = cmd.status().context("cannot run diem fit")?;
            if !st.success() {
                bail!("diem fit ({name}) failed ({st})");
            }
            let line = std::fs::read_to_string(dir.join("metrics.jsonl"))
                .with_context(|| format!("reading {}/metrics.jsonl", dir.display()))?;
            let m: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or("{}"))?;
            let e = m["estep_seconds"].as_f64().unwrap_or(f64::NAN);
            let ms = m["mstep_seconds"].as_f64().unwrap_or(f64::NAN);
            println!("xtask: repeat {r}, {name}: E-step {e:.3} s, M-step {ms:.3} s");
            rows.push(serde_json::json!({"layout": name, "ranks": ranks, "threads": threads, "repeat": r,
                "estep_seconds": e, "mstep_seconds": ms}));
        }
    }
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    crate::write_atomic(&out.join("results.jsonl"), (lines.join("\n") + "\n").as_bytes())?;
    let median = |name: &str, key: &str| {
        let mut v: Vec<f64> =
            rows.iter().filter(|r| r["layout"] == name).filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let base = median(LAYOUTS[0].0, "estep_seconds");
    let mut report = format!(
        "# E-step and M-step from 1 to 2 MPI ranks\n\n{} observations, E-step chunks of {}, {} repeats \
         (medians).\n\n| layout | E-step | speed-up | M-step |\n| --- | --- | --- | --- |\n",
        args.observations, args.chunk, args.repeat
    );
    for (name, _, _) in LAYOUTS {
        let e = median(name, "estep_seconds");
        report.push_str(&format!(
            "| {name} | {e:.3} s | {:.2}× | {:.3} s |\n",
            base / e,
            median(name, "mstep_seconds")
        ));
    }
    crate::write_atomic(&out.join("report.md"), report.as_bytes())?;
    println!("\n{report}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// The one-lap configuration: the shipped tiny manifold config with a 3×128 MLP, PC 32 steps and CG 3.
fn write_config(root: &Path, path: &Path, chunk: usize) -> Result<()> {
    let shipped = root.join("data").join("configs").join("manifold-tiny.json");
    let text = std::fs::read_to_string(&shipped).with_context(|| format!("reading {}", shipped.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", shipped.display()))?;
    v["laps"] = 1.into();
    v["progress"] = false.into();
    v["network"]["mlp"]["hidden"] = serde_json::json!([128, 128, 128]);
    v["network"]["mlp"]["embedding_features"] = 64.into();
    v["gaussian"]["iterations"] = 2.into();
    v["gaussian"]["steps"] = 16.into();
    v["gaussian"]["chunk_size"] = chunk.into();
    v["estep"]["sampler"] = serde_json::json!({ "pc": { "steps": 32, "corrections": 1, "tau": 0.1 } });
    v["estep"]["posterior"]["solver"]["iterations"] = 3.into();
    v["estep"]["chunk_size"] = chunk.into();
    v["mstep"]["steps"] = 64.into();
    v["mstep"]["batch_size"] = 256.into();
    v["diagnostics"]["sinkhorn_subsample"] = 256.into();
    crate::write_atomic(path, serde_json::to_string_pretty(&v)?.as_bytes())
}
