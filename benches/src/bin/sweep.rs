//! Beyond the paper: posterior samplers (MMPS 1/3, DPS, TMPD, PiGDM, DiffPIR, the covariance heuristics)
//! against the exact mixture posterior for d = 2..64. Usually run through `cargo xtask sweep`.
//!
//! Writes `config.json`, `sweep.csv`, `sweep-summary.csv` and `sweep.png` into `--out` (default `runs/sweep`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use diem_benches::report::{write_study, Measurement};
use diem_benches::stats::write_atomic;
use diem_benches::sweep::{run_one, SweepConfig, SweepMethod};

/// Posterior samplers vs the exact posterior across dimensions.
#[derive(Parser)]
struct Args {
    /// Larger sizes (16 seeds, 4,096 samples, 256 steps).
    #[arg(long)]
    full: bool,
    /// Number of seeds (overrides the preset).
    #[arg(long)]
    seeds: Option<u64>,
    /// Samples per method (overrides the preset).
    #[arg(long)]
    samples: Option<i64>,
    /// Sampler steps (overrides the preset).
    #[arg(long)]
    steps: Option<usize>,
    /// The sampler of the denoiser-type methods (default ddim; DPS and DiffPIR keep ddpm).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(diem_sampling::SamplerSpec::NAMES))]
    sampler: Option<String>,
    /// Comma-separated dimensions (overrides the preset).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<i64>>,
    /// Output folder.
    #[arg(long, default_value = "runs/sweep")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut config = if args.full { SweepConfig::full() } else { SweepConfig::default() };
    if let Some(v) = args.seeds {
        config.seeds = v;
    }
    if let Some(v) = args.samples {
        config.samples = v;
    }
    if let Some(v) = args.steps {
        config.steps = v;
    }
    if args.sampler.is_some() {
        config.sampler = args.sampler;
    }
    if let Some(v) = args.dims {
        config.dims = v;
    }
    let config_path = args.out.join("config.json");
    write_atomic(&config_path, serde_json::to_string_pretty(&config)?.as_bytes())?;
    eprintln!(
        "sweep: d ∈ {:?}, {} seeds, {} samples, {} steps (CPU, float64)",
        config.dims, config.seeds, config.samples, config.steps
    );
    let start = Instant::now();
    let mut measurements = Vec::new();
    for &d in &config.dims {
        for seed in 0..config.seeds {
            for r in run_one(&config, d, seed, &SweepMethod::ALL)? {
                eprintln!(
                    "  [{:>6.1}s] d {:>2} seed {} {:<16} S = {:.3e}",
                    start.elapsed().as_secs_f64(),
                    d,
                    seed,
                    r.method.name(),
                    r.divergence
                );
                measurements.push(Measurement {
                    series: r.method.name().into(),
                    x: d as f64,
                    seed,
                    value: r.divergence,
                });
            }
        }
    }
    let (raw, summary, figure) =
        (args.out.join("sweep.csv"), args.out.join("sweep-summary.csv"), args.out.join("sweep.png"));
    let groups = write_study(
        &measurements,
        "dimension",
        "sinkhorn_divergence",
        &format!(
            "Posterior samplers vs the exact posterior ({} seeds, {} steps)",
            config.seeds, config.steps
        ),
        &|name: &str| name.to_string(),
        &raw,
        &summary,
        &figure,
    )?;
    println!("sweep: finished in {:.1} s", start.elapsed().as_secs_f64());
    println!("median Sinkhorn divergence per dimension:");
    for (name, points) in &groups {
        let line: Vec<String> = points.iter().map(|(x, q)| format!("{x}: {:.2e}", q.median)).collect();
        println!("  {name:<16} {}", line.join("  "));
    }
    for p in [&config_path, &raw, &summary, &figure] {
        println!("wrote {}", p.display());
    }
    Ok(())
}
