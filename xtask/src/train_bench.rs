//! `cargo xtask bench train`: diem's M-step training step against PyTorch's on the same networks (the manifold
//! MLP and a small U-Net), the same loss, optimizer, dtype and threads, in interleaved runs. Each run is its own
//! process (`bench_train` of `diem-benches` in release mode, `benches/python/torch_train.py` in `.venv`) and
//! prints one JSON line; the report gives the median time per step of each implementation.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::experiments::build_release_bin;
use crate::torch;

/// Arguments of `cargo xtask bench train`.
#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// Runs per implementation, network and thread count, interleaved; the report gives medians.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// libtorch intra-op thread counts, comma-separated (both sides use each).
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed steps of the MLP per run (after 5 untimed ones).
    #[arg(long, default_value_t = 50)]
    mlp_steps: usize,
    /// Timed steps of the U-Net per run (after 2 untimed ones).
    #[arg(long, default_value_t = 8)]
    unet_steps: usize,
    /// Only the MLP.
    #[arg(long)]
    mlp_only: bool,
    /// `OMP_WAIT_POLICY` of both sides: `passive` (the diem binaries' default, see the README's "Threads"),
    /// `active`, or `default` (unset: libgomp spins for a few milliseconds before it sleeps).
    #[arg(long, default_value = "passive", value_parser = ["passive", "active", "default"])]
    wait_policy: String,
}

/// One network of the comparison.
struct Case {
    net: &'static str,
    label: &'static str,
    json: &'static str,
    batch: i64,
    schedule: [&'static str; 2],
    warmup: usize,
}

/// The manifold MLP (docs/method.md §9a: F = 5, hidden 3 × 256, E = 64) at the M-step's batch 1024.
const MLP: Case = Case {
    net: "mlp",
    label: "manifold MLP 5 → 3×256 → 5 (E = 64), batch 1024",
    json: r#"{"features":5,"hidden":[256,256,256],"embedding_features":64}"#,
    batch: 1024,
    schedule: ["1e-3", "1e1"],
    warmup: 5,
};

/// A small CIFAR-like U-Net (docs/method.md §9b's blocks): 3 × 32 × 32 images, channels (32, 64), one block per
/// level, attention with 4 heads at 16 × 16, E = 64, dropout 0.1, batch 8.
const UNET: Case = Case {
    net: "unet",
    label: "U-Net 3×32×32, channels (32, 64), blocks (1, 1), heads (0, 4), E = 64, dropout 0.1, batch 8",
    json: r#"{"in_channels":3,"out_channels":3,"channels":[32,64],"blocks":[1,1],"heads":[0,4],"kernel_size":3,"embedding_features":64,"dropout":0.1,"patch_size":1}"#,
    batch: 8,
    schedule: ["1e-3", "1e2"],
    warmup: 2,
};

/// The implementations compared: (name in the report, diem or python, optimizer argument).
const IMPLS: [(&str, bool, &str); 4] = [
    ("diem (libtorch Adam)", true, "tch"),
    ("diem (fused, opt-in)", true, "fused"),
    ("PyTorch (default Adam)", false, "default"),
    ("PyTorch (fused Adam)", false, "fused"),
];

/// What one run printed.
#[derive(Debug, Clone)]
struct Run {
    ms_per_step: f64,
    cpu_seconds: Option<f64>,
    parameters: i64,
    finite: bool,
}

fn run_json(mut cmd: Command, what: &str) -> Result<Run> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON line")?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("{what}: bad JSON {line}"))?;
    Ok(Run {
        ms_per_step: v["ms_per_step"].as_f64().context("ms_per_step missing")?,
        cpu_seconds: v["cpu_seconds"].as_f64(),
        parameters: v["parameters"].as_i64().context("parameters missing")?,
        finite: v["finite"].as_bool().unwrap_or(false),
    })
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `cargo xtask bench train`.
pub fn bench(root: &Path, args: &BenchTrainArgs) -> Result<ExitCode> {
    let env = torch::setup(root)?;
    let torch::Source::Venv(venv) = &env.source else {
        bail!("bench train needs the project's .venv (unset LIBTORCH so `cargo xtask setup` creates it)");
    };
    let python = venv.join("bin").join("python");
    let script = root.join("benches").join("python").join("torch_train.py");
    let bin = build_release_bin(root, &env, "diem-benches", "bench_train")?;
    let repeat = args.repeat.max(1);
    let cases: Vec<&Case> = if args.mlp_only { vec![&MLP] } else { vec![&MLP, &UNET] };
    let load_before = load_average();
    let mut md = format!(
        "# The M-step side by side: diem vs PyTorch {}\n\nOne training step = batch draw, σ ~ Beta(3, 3) through the \
         VE schedule, the EDM-preconditioned DSM loss (λ(σ) = 1/σ² + 1), backward, global-norm clipping to 1, Adam \
         (β = 0.9, 0.999, ε = 1e-8, linear lr decay from 1e-3), float32, CPU. Each run is its own process: {} \
         untimed steps, then the timed ones; {repeat} runs per cell, interleaved (every implementation once, then \
         again); the median ms/step is shown with the min–max. OpenMP wait policy of both sides: {}. Load average \
         (1, 5, 15 min) before: {load_before}.\n",
        torch::TORCH_VERSION,
        MLP.warmup,
        args.wait_policy
    );
    for case in cases {
        let steps = if case.net == "mlp" { args.mlp_steps } else { args.unet_steps }.max(1);
        md.push_str(&format!(
            "\n## {}\n\n{steps} timed steps per run.\n\n| threads | implementation | parameters | ms/step (min–max) \
             | CPU s/step | vs PyTorch default | vs PyTorch fused |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
            case.label
        ));
        for &threads in &args.threads {
            let mut runs: Vec<Vec<Run>> = vec![Vec::new(); IMPLS.len()];
            for rep in 1..=repeat {
                for (i, (name, ours, adam)) in IMPLS.iter().enumerate() {
                    eprintln!("xtask: {} {name}, {threads} threads, run {rep}/{repeat}", case.net);
                    let mut cmd = if *ours {
                        let mut c = Command::new(&bin);
                        env.apply(&mut c)?;
                        c
                    } else {
                        let mut c = Command::new(&python);
                        c.arg(&script);
                        c
                    };
                    cmd.current_dir(root);
                    cmd.args(["--net", case.net, "--json", case.json, "--batch", &case.batch.to_string()]);
                    cmd.args(["--steps", &steps.to_string(), "--warmup", &case.warmup.to_string()]);
                    cmd.args(["--threads", &threads.to_string(), "--adam", adam]);
                    cmd.args(["--schedule", case.schedule[0], case.schedule[1]]);
                    // The same libgomp settings on both sides (bench_train does not re-execute itself).
                    cmd.env("OMP_NUM_THREADS", threads.to_string());
                    cmd.env_remove("GOMP_SPINCOUNT");
                    match args.wait_policy.as_str() {
                        "default" => cmd.env_remove("OMP_WAIT_POLICY"),
                        policy => cmd.env("OMP_WAIT_POLICY", policy.to_uppercase()),
                    };
                    runs[i].push(run_json(cmd, name)?);
                }
            }
            let med: Vec<f64> =
                runs.iter().map(|r| median(r.iter().map(|x| x.ms_per_step).collect())).collect();
            let (pt_default, pt_fused) = (med[2], med[3]);
            for (i, (name, _, _)) in IMPLS.iter().enumerate() {
                let r = &runs[i];
                let lo = r.iter().map(|x| x.ms_per_step).fold(f64::INFINITY, f64::min);
                let hi = r.iter().map(|x| x.ms_per_step).fold(0.0, f64::max);
                let cpu = median(r.iter().filter_map(|x| x.cpu_seconds).collect());
                let finite = if r.iter().all(|x| x.finite) { "" } else { " (non-finite loss)" };
                md.push_str(&format!(
                    "| {threads} | {name}{finite} | {} | {:.2} ({lo:.2}–{hi:.2}) | {:.4} | {:.2}× | {:.2}× |\n",
                    r[0].parameters,
                    med[i],
                    cpu / steps as f64,
                    med[i] / pt_default,
                    med[i] / pt_fused
                ));
            }
            if runs[0][0].parameters != runs[2][0].parameters {
                bail!(
                    "parameter counts differ: diem {} vs PyTorch {}",
                    runs[0][0].parameters,
                    runs[2][0].parameters
                );
            }
        }
    }
    md.push_str(&format!("\nLoad average after: {}.\n", load_average()));
    let dir = root.join("runs").join("bench-train");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = dir.join("report.md");
    crate::write_atomic(&report, md.as_bytes())?;
    println!("{md}");
    println!("wrote {}", report.display());
    Ok(ExitCode::SUCCESS)
}
